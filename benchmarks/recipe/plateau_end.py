"""Plateau end per run: the first eval step whose val loss is `margin` nats below the data's unigram
loss (estimated from training tokens), for every run under the given directories.

    python benchmarks/recipe/plateau_end.py /work/scratch/h15/synth_wsd --unigram 4.8498
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs import curve, first_below  # noqa: E402


_UNI: dict = {}


def unigram_loss(cfg: dict) -> float:
    """Cross-entropy of the training unigram (add-0.5 smoothed) on the run's own validation tokens."""
    import numpy as np

    from analysis.plateau import unigram_loss as unigram_ce
    from train.config import RunConfig
    from train.data import build_data
    rc = RunConfig.from_dict(cfg)
    key = json.dumps(cfg["data"], sort_keys=True)
    if key not in _UNI:
        src = build_data(rc.data, rc.model.context)
        tr = np.concatenate([src.train_array(i, 64).ravel() for i in range(200)])
        _UNI[key] = unigram_ce(tr, src.val_array(65536)[:, 1:], rc.model.vocab_size)
    return _UNI[key]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--unigram", type=float, default=0.0, help="0: estimate per data config from its tokens")
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--min-steps", type=int, default=1000, help="only runs at least this long")
    a = ap.parse_args()
    print(f"| run | shape | batch | lr | steps | unigram loss | first eval below unigram-{a.margin}: step (tokens) | loss there |")
    print("|---|---|---|---|---|---|---|---|")
    for root in a.dirs:
        for d in sorted(Path(root).glob("*/")):
            if not (d / "summary.json").exists():
                continue
            c = json.loads((d / "config.json").read_text())
            steps = -(-c["train"]["tokens"] // c["train"]["batch_tokens"])
            if steps < a.min_steps:
                continue
            rows = curve(d)
            uni = a.unigram or unigram_loss(c)
            fb = first_below(rows, uni - a.margin)
            loss = next((r["val_loss"] for r in rows if fb and r["step"] == fb[0]), float("nan"))
            print(f"| {d.name} | w{c['model']['width']}d{c['model']['depth']} s{c['data']['seed']} | "
                  f"{c['train']['batch_tokens']} | {c['optim']['lr']:.3g} | {steps} | {uni:.3f} | {fb} | {loss:.3f} |")


if __name__ == "__main__":
    main()
