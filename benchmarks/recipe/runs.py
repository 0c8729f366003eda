"""Tiny launcher and reader for the recipe experiments.

`launch(jobs, base, variants, out)` trains each variant (a dict of dotted overrides on top
of `base`) with `testbed train` into out/<name>, `jobs` at a time, one thread each, and
skips finished runs (testbed train resumes/refuses by config hash). `curve(dir)` reads a
run's eval rows. Used by the other scripts in this folder; every number in the report
comes from a run directory written through here or through `testbed sweep run`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def _args(d: dict) -> list[str]:
    return [f"{k}={v}" for k, v in d.items()]


def launch(variants: dict[str, dict], out: str | Path, base: dict, jobs: int = 2, quiet: bool = True) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for name, ov in variants.items():
        d = out / name
        s = d / "summary.json"
        if s.exists() and json.loads(s.read_text()).get("status") in ("completed", "diverged"):
            continue
        todo.append((name, {**base, **ov, "train.threads": 1}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = []
    t0 = time.time()
    while todo or running:
        while todo and len(running) < jobs:
            name, ov = todo.pop(0)
            log = open(out / f"{name}.log", "w")
            p = subprocess.Popen([PY, "-m", "train", "--out", str(out / name), *_args(ov)], stdout=log,
                                 stderr=subprocess.STDOUT, env=env, cwd=REPO)
            running.append((name, p, log))
        time.sleep(0.3)
        for item in list(running):
            name, p, log = item
            if p.poll() is not None:
                log.close()
                running.remove(item)
                if not quiet or p.returncode:
                    print(f"[{time.time() - t0:.0f}s] {name} rc={p.returncode}", flush=True)


def curve(d: str | Path) -> list[dict]:
    rows = []
    for line in open(Path(d) / "metrics.jsonl"):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if r.get("kind") == "eval":
            rows.append(r)
    return rows


def summary(d: str | Path) -> dict:
    return json.loads((Path(d) / "summary.json").read_text())


def first_below(rows: list[dict], level: float):
    """(step, tokens) of the first eval point whose val_loss is below `level`, or None (the rule of
    analysis.plateau.plateau_end, with the margin already taken off `level`)."""
    from analysis.plateau import plateau_end
    step = plateau_end([r["step"] for r in rows], [r["val_loss"] for r in rows], unigram=level, margin=0.0)
    return None if step is None else (step, next(r["tokens"] for r in rows if r["step"] == step))
