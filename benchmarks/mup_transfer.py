"""muP learning-rate transfer: does the best LR stay put as width grows?

Runs the `mup_lr_transfer` sweep preset (an LR grid at several widths, under SP
and muP; runs already finished are skipped), then prints the final validation
loss per (parametrization, width, lr), the best LR per width, and how many grid
steps the best LR moves from the narrowest to the widest model. Yang et al.
2022 ("Tensor Programs V", Fig. 1) show the muP optimum staying put while the
SP optimum drifts toward smaller LRs as width grows.

    python benchmarks/mup_transfer.py --out runs/mup_lr_transfer [--jobs 2]
    python benchmarks/mup_transfer.py --out runs/mup_lr_transfer --no-run   # summarise only
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from train.rundir import read_run

DEFAULT_SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "presets" / "mup_lr_transfer.yaml"


def collect(sweep_dir: Path) -> list[dict]:
    """One row per run directory: parametrization, width, lr, status, final val loss."""
    rows = []
    for run_dir in sorted(p for p in sweep_dir.iterdir() if (p / "config.json").exists()):
        config, metrics, summary = read_run(run_dir)
        evals = [m["val_loss"] for m in metrics if m.get("kind") == "eval"]
        status = (summary or {}).get("status", "unfinished")
        loss = (summary or {}).get("final_val_loss") if status == "completed" else None
        rows.append({"param": config["model"]["parametrization"], "width": config["model"]["width"],
                     "lr": config["optim"]["lr"], "status": status,
                     "val_loss": loss if loss is not None else (evals[-1] if evals and status == "completed" else None)})
    return rows


def best_lrs(rows: list[dict]) -> dict[tuple[str, int], float]:
    best: dict[tuple[str, int], tuple[float, float]] = {}
    for r in rows:
        if r["val_loss"] is None or not math.isfinite(r["val_loss"]):
            continue
        key = (r["param"], r["width"])
        if key not in best or r["val_loss"] < best[key][0]:
            best[key] = (r["val_loss"], r["lr"])
    return {k: v[1] for k, v in best.items()}


def format_report(rows: list[dict]) -> str:
    lrs = sorted({r["lr"] for r in rows})
    widths = sorted({r["width"] for r in rows})
    params = [p for p in ("sp", "mup") if any(r["param"] == p for r in rows)]
    cell = {(r["param"], r["width"], r["lr"]): r for r in rows}
    best = best_lrs(rows)
    head = f"{'param':<5} {'width':>5} |" + "".join(f"{lr:>9.3g}" for lr in lrs) + " | best lr"
    lines = ["final val loss (nats/token) per learning rate; * marks the best per row", head, "-" * len(head)]
    for p in params:
        for w in widths:
            cells = []
            for lr in lrs:
                r = cell.get((p, w, lr))
                if r is None:
                    cells.append(f"{'-':>9}")
                elif r["val_loss"] is None:
                    cells.append(f"{r['status'][:4]:>9}")
                else:
                    mark = "*" if best.get((p, w)) == lr else " "
                    cells.append(f"{r['val_loss']:>8.4f}{mark}")
            b = best.get((p, w))
            lines.append(f"{p:<5} {w:>5} |" + "".join(cells) + (f" | {b:.3g}" if b else " | -"))
    lines.append("")
    for p in params:
        got = [(w, best[(p, w)]) for w in widths if (p, w) in best]
        if len(got) >= 2:
            steps = [lrs.index(lr) for _, lr in got]
            shift = steps[-1] - steps[0]
            spread = max(steps) - min(steps)
            lines.append(f"{p}: best lr {' -> '.join(f'{lr:.3g}' for _, lr in got)} over widths "
                         f"{' -> '.join(str(w) for w, _ in got)}; shift {shift:+d} grid steps "
                         f"(narrowest to widest), spread {spread} steps")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/mup_lr_transfer"), help="sweep directory")
    p.add_argument("--spec", default=str(DEFAULT_SPEC), help="sweep spec (default: the mup_lr_transfer preset)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--no-run", action="store_true", help="only summarise an existing sweep directory")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    a = p.parse_args(argv)
    if not a.no_run:
        from sweeps.cli import main as sweep_main
        rc = sweep_main(["run", a.spec, "--out", str(a.out), "--jobs", str(a.jobs), "--quiet"])
        if rc not in (0, 1):       # 1: some run diverged (high LRs do); still summarise
            return rc
    if not a.out.is_dir():
        print(f"mup_transfer: sweep directory {str(a.out)!r} does not exist", file=sys.stderr)
        return 2
    rows = collect(a.out)
    if not rows:
        print(f"mup_transfer: no run directories in {str(a.out)!r}", file=sys.stderr)
        return 2
    print(format_report(rows))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
