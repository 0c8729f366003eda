"""`python -m models key=value ...`: parameter counts and FLOPs/token for a model config.

Keys are ModelConfig fields, with or without the `model.` prefix:

    python -m models width=256 depth=4 vocab_size=512 context=128 pos=rope
"""
from __future__ import annotations

import sys

from models.config import ModelConfig
from models.counting import CONVENTIONS, flops_per_token_by_name, param_counts

DEFAULT_VOCAB = 256   # counting needs a vocabulary; the byte-level size when none is given


def parse(argv: list[str]) -> ModelConfig:
    from train.config import apply_overrides   # torch-free; owns the typed key=value parsing
    overrides = [a[len("model."):] if a.startswith("model.") else a for a in argv]
    cfg = apply_overrides(ModelConfig(), overrides)
    if cfg.vocab_size == 0:
        cfg = apply_overrides(cfg, {"vocab_size": DEFAULT_VOCAB})
    cfg.validate()
    return cfg


def report(cfg: ModelConfig) -> str:
    counts = param_counts(cfg)
    flops = flops_per_token_by_name(cfg)
    shape = f"{cfg.kind} width={cfg.width} depth={cfg.depth}"
    if cfg.kind == "gpt":
        shape += f" heads={cfg.n_heads}"
    lines = [f"{shape} context={cfg.context} vocab={cfg.vocab_size} (padded {cfg.padded_vocab})", ""]
    lines += [f"  params {k:<14} {v:>15,d}" for k, v in counts.items()]
    lines.append("")
    lines += [f"  FLOPs/token {c:<9} {flops[c]:>15,.0f}" for c in CONVENTIONS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    try:
        cfg = parse(argv)
    except ValueError as e:     # ConfigError is a ValueError
        print(f"models: {e}", file=sys.stderr)
        return 2
    print(report(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
