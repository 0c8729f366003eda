"""muP coordinate check (Yang et al. 2022, "Tensor Programs V", Sec. 6 / Fig. 5).

Train GPTs of growing width for a few Adam steps on one fixed batch of random
tokens and record the mean |coordinate| of each block's output and of the
logits after every step. Under muP these curves are flat in width; under SP
with Adam they grow with width (the update of a width-n matrix moves each
output coordinate by O(n * lr)), which is what makes the best SP learning rate
shrink as models grow.

    testbed coordcheck --widths 64,128,256,512,1024 --steps 5 --lr 1e-2 --out coord/
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from models.config import ModelConfig

DEFAULT_WIDTHS = (64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class CoordCheckConfig:
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    parametrizations: tuple[str, ...] = ("sp", "mup")
    base_width: int = 0         # muP base width; 0: the smallest width
    depth: int = 2
    head_dim: int = 16
    context: int = 32
    vocab_size: int = 256
    batch_size: int = 8
    steps: int = 5
    lr: float = 1e-2
    seeds: int = 1              # curves averaged over this many seeds
    tie_embeddings: bool = False

    def validate(self) -> None:
        if len(self.widths) < 2:
            raise ValueError(f"--widths needs at least two widths, got {self.widths}")
        if any(w <= 0 or w % self.head_dim for w in self.widths):
            raise ValueError(f"--widths must be positive multiples of --head-dim={self.head_dim}, got {self.widths}")
        bad = [p for p in self.parametrizations if p not in ("sp", "mup")]
        if bad:
            raise ValueError(f"--param must be sp, mup or both, got {bad}")
        if self.base_width and self.base_width > min(self.widths):
            raise ValueError(f"--base-width={self.base_width} is larger than the smallest width {min(self.widths)}")
        for name in ("depth", "context", "vocab_size", "batch_size", "steps", "seeds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")

    def model_config(self, width: int, parametrization: str) -> ModelConfig:
        mup = parametrization == "mup"
        return ModelConfig(kind="gpt", width=width, depth=self.depth, head_dim=self.head_dim, context=self.context,
                           vocab_size=self.vocab_size, tie_embeddings=self.tie_embeddings,
                           parametrization=parametrization,
                           mup_base_width=(self.base_width or min(self.widths)) if mup else 0)


@dataclass(frozen=True)
class Record:
    parametrization: str
    width: int
    step: int           # Adam steps taken before the measurement (0: at init)
    layer: str          # "embed", "block.<i>", "logits"
    l1: float           # mean |coordinate|, averaged over seeds


def _measure(cfg: CoordCheckConfig, width: int, parametrization: str, seed: int) -> dict[tuple[int, str], float]:
    import contextlib

    import torch

    from models import build_model
    from train.config import OptimConfig
    from train.loop import lm_loss
    from train.optim import build_optimizer

    torch.manual_seed(seed)
    model = build_model(cfg.model_config(width, parametrization))
    g = torch.Generator().manual_seed(10_000 + seed)     # the same batch at every width
    idx_BxT1 = torch.randint(0, cfg.vocab_size, (cfg.batch_size, cfg.context + 1), generator=g)
    acts: dict[str, float] = {}

    def hook(name):
        def record(_module, _inp, out):
            out = out[0] if isinstance(out, tuple) else out   # the model returns (logits, state)
            acts[name] = out.detach().abs().mean().item()
        return record

    handles = [model.wte.register_forward_hook(hook("embed"))]
    handles += [b.register_forward_hook(hook(f"block.{i}")) for i, b in enumerate(model.blocks)]
    handles.append(model.register_forward_hook(hook("logits")))
    # the trainer's AdamW over the model's muP groups; no decay and Adam's default betas: plain Adam
    opt = build_optimizer(model, OptimConfig(lr=cfg.lr, beta1=0.9, beta2=0.999, weight_decay=0.0, fused=False),
                          torch.device("cpu"))
    out: dict[tuple[int, str], float] = {}
    for step in range(cfg.steps + 1):
        loss = lm_loss(model, idx_BxT1, contextlib.nullcontext())
        out.update({(step, k): v for k, v in acts.items()})
        if step == cfg.steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for h in handles:
        h.remove()
    return out


def coord_check(cfg: CoordCheckConfig) -> list[Record]:
    """Mean |activation| per (parametrization, width, step, layer)."""
    cfg.validate()
    records = []
    for param in cfg.parametrizations:
        for width in cfg.widths:
            runs = [_measure(cfg, width, param, seed) for seed in range(cfg.seeds)]
            for key in runs[0]:
                step, layer = key
                records.append(Record(param, width, step, layer, sum(r[key] for r in runs) / len(runs)))
    return records


def width_slopes(records: list[Record], step: int) -> dict[tuple[str, str], float]:
    """Least-squares slope of log(mean |x|) against log(width) per (parametrization, layer) at `step`.

    About 0 means width-independent coordinates (what muP promises); > 0 means they grow with width."""
    by_key: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in records:
        if r.step == step:
            by_key.setdefault((r.parametrization, r.layer), []).append((math.log(r.width), math.log(r.l1)))
    slopes = {}
    for key, pts in by_key.items():
        mx = sum(x for x, _ in pts) / len(pts)
        my = sum(y for _, y in pts) / len(pts)
        sxx = sum((x - mx) ** 2 for x, _ in pts)
        slopes[key] = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return slopes


def format_table(records: list[Record], step: int) -> str:
    widths = sorted({r.width for r in records})
    slopes = width_slopes(records, step)
    head = f"{'param':<6} {'layer':<9}" + "".join(f"{w:>10d}" for w in widths) + f"{'slope':>9}"
    lines = [f"mean |activation| after {step} Adam steps, by width (slope: d log|x| / d log width)", head,
             "-" * len(head)]
    table = {(r.parametrization, r.layer, r.width): r.l1 for r in records if r.step == step}
    for param, layer in sorted(slopes, key=lambda k: (k[0], _layer_order(k[1]))):
        row = "".join(f"{table[(param, layer, w)]:>10.3g}" for w in widths)
        lines.append(f"{param:<6} {layer:<9}{row}{slopes[(param, layer)]:>9.2f}")
    return "\n".join(lines)


def _layer_order(layer: str) -> tuple[int, int]:
    if layer == "embed":
        return (0, 0)
    if layer == "logits":
        return (2, 0)
    return (1, int(layer.split(".")[1]))


def plot(records: list[Record], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")   # files only; set here, not at import time
    import matplotlib.pyplot as plt

    params = sorted({r.parametrization for r in records})
    steps = sorted({r.step for r in records})
    layers = sorted({r.layer for r in records}, key=_layer_order)
    fig, axes = plt.subplots(len(params), len(steps), figsize=(3 * len(steps), 3 * len(params)),
                             squeeze=False, sharey="row")
    for i, param in enumerate(params):
        for j, step in enumerate(steps):
            ax = axes[i][j]
            for layer in layers:
                pts = sorted((r.width, r.l1) for r in records
                             if r.parametrization == param and r.step == step and r.layer == layer)
                ax.plot([w for w, _ in pts], [v for _, v in pts], marker="o", label=layer)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{param.upper()} step {step}", fontsize=9)
            if j == 0:
                ax.set_ylabel("mean |activation|")
            if i == len(params) - 1:
                ax.set_xlabel("width")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str]) -> tuple[CoordCheckConfig, Path | None]:
    p = argparse.ArgumentParser(prog="testbed coordcheck", description=__doc__.split("\n\n")[0])
    d = CoordCheckConfig()
    p.add_argument("--widths", default=",".join(map(str, d.widths)), help="comma-separated widths")
    p.add_argument("--param", default="both", help="sp, mup or both")
    p.add_argument("--base-width", type=int, default=d.base_width, help="muP base width (0: smallest width)")
    p.add_argument("--depth", type=int, default=d.depth)
    p.add_argument("--head-dim", type=int, default=d.head_dim)
    p.add_argument("--context", type=int, default=d.context)
    p.add_argument("--vocab-size", type=int, default=d.vocab_size)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seeds", type=int, default=d.seeds)
    p.add_argument("--tie-embeddings", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="directory for coordcheck.png and coordcheck.txt")
    a = p.parse_args(argv)
    try:
        widths = tuple(int(w) for w in a.widths.split(",") if w.strip())
    except ValueError:
        raise ValueError(f"--widths must be comma-separated integers, got {a.widths!r}") from None
    params = ("sp", "mup") if a.param == "both" else (a.param,)
    cfg = CoordCheckConfig(widths=widths, parametrizations=params, base_width=a.base_width, depth=a.depth,
                           head_dim=a.head_dim, context=a.context, vocab_size=a.vocab_size,
                           batch_size=a.batch_size, steps=a.steps, lr=a.lr, seeds=a.seeds,
                           tie_embeddings=a.tie_embeddings)
    cfg.validate()
    return cfg, a.out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        cfg, out = parse_args(argv)
    except ValueError as e:
        print(f"coordcheck: {e}", file=sys.stderr)
        return 2
    records = coord_check(cfg)
    text = format_table(records, cfg.steps)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "coordcheck.txt").write_text(text + "\n")
        plot(records, out / "coordcheck.png")
        print(f"wrote {out / 'coordcheck.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["CoordCheckConfig", "Record", "coord_check", "width_slopes", "format_table", "plot", "main"]
