"""`testbed lr-rule --out DIR [--data PATH]`: measure a preset's learning-rate rule on the data it will train.

The demo's recipe gives every ladder size its learning rate from a power law of N, lr*(N) =
coef (N / ref)^exponent, measured by LR sweeps at two widths on the corpus the ladder trains
(benchmarks/recipe/README.md, section (2)). Under muP the optimum still drifts with width, and not
the same way on every corpus: it rises with N on the synthetic language, falls on Wikipedia, and on
tiny_shakespeare read as bytes it sits about 3x above Wikipedia's (section (16)). The `text-cpu`
preset's rule was measured on Wikipedia; a ladder on another corpus at that rule trains off its
optimum, which a forecast cannot correct. This command makes the measurement on any preset and data:

1. at the ladder's smallest and largest sizes (or `--widths`), train the ladder's base run (its
   model, data, batch, schedule with its cooldown, eval tokens, and inits: the ladder's `replicates`;
   one eval, at the end) at
   the median token budget of the ladder's runs, at 0.5x, 1x and 2x the LR the preset's rule gives
   that size: a sweep in DIR/round-1;
2. where a size's best LR is the smallest or the largest tried, try the next octave beyond (DIR/round-2,
   ...; at most `--rounds` rounds in all);
3. fit the rule through the optima (`analysis.lr`: a parabola in log2 LR per size, a power law over
   sizes), print the table with each optimum's and the exponent's standard error over the inits and
   the LR the rule gives the preset's target (within one standard error of the exponent: two sizes
   pin the LR in the middle of the ladder, not its drift), and write DIR/lr_rule.json;
   `--write-preset FILE` writes the preset with the measured rule and the corpus, for
   `testbed demo --scale FILE`.

Every round is a sweep: a rerun of the same command skips finished runs and resumes the rest, and
decides the next round from the same losses.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

from testbed.preset import (DemoError, DemoPreset, ladder_runs, preset_names, resolve_preset, run_guarded,
                            target_run, yaml_dump)
from train.contract import COMPLETED, DIVERGED
from train.rundir import atomic_write_json

RULE_FILE = "lr_rule.json"


def ladder_shapes(preset: DemoPreset) -> list[dict]:
    """The ladder's model shapes in order of N: width, depth, N (the ladder's convention) and the LR its rule gives."""
    shapes = {}
    for r in ladder_runs(preset):
        m = r.config.model
        shapes.setdefault((m.width, m.depth), {"width": m.width, "depth": m.depth, "N": float(r.n_params),
                                               "lr": float(r.config.optim.lr)})
    return sorted(shapes.values(), key=lambda s: s["N"])


def chosen_shapes(preset: DemoPreset, widths: list[int] | None) -> list[dict]:
    """The smallest and largest ladder shapes, or every ladder shape whose width is in `widths`."""
    shapes = ladder_shapes(preset)
    if not widths:
        return [shapes[0], shapes[-1]] if len(shapes) > 1 else shapes
    have = sorted({s["width"] for s in shapes})
    missing = [w for w in widths if w not in have]
    if missing:
        raise DemoError(f"--widths: {', '.join(map(str, missing))} not in the ladder (its widths: "
                        f"{', '.join(map(str, have))})")
    return [s for s in shapes if s["width"] in widths]


def median_tokens(preset: DemoPreset) -> int:
    """The median token budget of the ladder's runs (a WSD-branch ladder: its middle budget)."""
    tokens = sorted(r.tokens for r in ladder_runs(preset))
    return int(tokens[len(tokens) // 2])


def round_spec(preset: DemoPreset, points: list[tuple[dict, float]], tokens: int, name: str) -> dict:
    """A grid sweep of the ladder's base run at each (shape, LR) of `points`, `tokens` long: the ladder's
    overrides, its per-size rules but the LR's, its N convention, its replicates and executor. One eval
    point before the final one: only the final loss is read, and a text ladder's 16 evals of 65,536
    tokens cost about as much as training a 409.6k-token run of its smallest size."""
    ladder = preset.ladder
    spec = {"name": name, "description": f"LR sweep of preset {preset.name} at {tokens} tokens",
            "family": "grid",
            "overrides": {**(ladder.get("overrides") or {}), "train.tokens": int(tokens), "eval.points": 1},
            "zip": [{"model.width": [s["width"] for s, _ in points], "model.depth": [s["depth"] for s, _ in points],
                     "optim.lr": [float(f"{lr:.6g}") for _, lr in points]}],
            "rules": {k: v for k, v in (ladder.get("rules") or {}).items() if k != "optim.lr"},
            "n_params": ladder.get("n_params", "total"), "replicates": ladder.get("replicates", 1),
            "executor": copy.deepcopy(ladder.get("executor") or {})}
    for key in ("base", "base_config"):
        if key in ladder:
            spec[key] = copy.deepcopy(ladder[key])
    if not spec["rules"]:
        del spec["rules"]
    return spec


def _rows(outcome) -> list[dict]:
    """One row per run of a finished round: size, N, lr, seed, loss (inf for a diverged run)."""
    from sweeps.sweepdir import SweepDir, read_summary

    sd = SweepDir(outcome.out)
    rows, failed = [], []
    for r in outcome.runs:
        state = outcome.state.get(r.run_id)
        m = r.config.model
        row = {"size": f"w{m.width} d{m.depth}", "N": float(r.n_params), "lr": float(r.config.optim.lr),
               "seed": int(r.config.run.seed), "width": m.width, "depth": m.depth}
        if state == DIVERGED:
            rows.append({**row, "loss": float("inf")})
        elif state == COMPLETED:
            summary, _ = read_summary(sd.run_dir(r.run_id))
            rows.append({**row, "loss": float(summary["final_val_loss"])})
        else:
            failed.append(r.run_id)
    if failed:
        log = sd.log_file(failed[0])
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()] if log.exists() else []
        last = f"; the first ends: {lines[-1].strip()}" if lines else ""
        raise DemoError(f"{len(failed)} LR sweep runs did not complete ({', '.join(failed[:3])}){last}; see "
                        f"{outcome.out}/logs, then rerun the same command")
    return rows


def next_points(rows: list[dict], shapes: list[dict]) -> list[tuple[dict, float]]:
    """The (shape, LR) to try next: an octave beyond the grid for every size whose best LR is at its edge."""
    import pandas as pd

    from analysis.lr import lr_optima

    out = []
    for o in lr_optima(pd.DataFrame(rows)):
        if o.edge:
            shape = next(s for s in shapes if f"w{s['width']} d{s['depth']}" == o.size)
            out.append((shape, o.best_lr / 2 if o.edge == "low" else o.best_lr * 2))
    return out


def measure(out: str | Path, preset: DemoPreset, *, widths: list[int] | None = None, tokens: int | None = None,
            rounds: int = 3, quiet: bool = False) -> dict:
    """Sweep, fit and write DIR/lr_rule.json (see the module docstring); returns what it wrote."""
    import pandas as pd
    from rich.console import Console

    from analysis.lr import fit_lr_rule, lr_optima, markdown
    from sweeps import run_sweep
    from sweeps.rules import rule_value
    from sweeps.spec import SweepError

    if preset.needs_data:
        raise DemoError(f"preset {preset.name} trains on a local text corpus: give it with --data PATH")
    if rounds < 1:
        raise DemoError(f"--rounds must be >= 1, got {rounds}")
    console = Console(quiet=quiet)
    shapes = chosen_shapes(preset, widths)
    if len(shapes) < 2:
        raise DemoError(f"a rule in N needs two or more sizes; the sweep would have {len(shapes)}")
    tokens = int(tokens or median_tokens(preset))
    out = Path(out)
    t0 = time.time()
    points = [(s, s["lr"] * f) for s in shapes for f in (0.5, 1.0, 2.0)]
    rows: list[dict] = []
    for k in range(1, rounds + 1):
        console.rule(f"[bold]LR sweep, round {k}[/] ({len(points)} shape x LR points, {tokens:,} tokens each)")
        try:
            outcome = run_sweep(round_spec(preset, points, tokens, f"lr-{preset.name}-round{k}"), out / f"round-{k}",
                                quiet=quiet)
        except SweepError as e:
            raise DemoError(f"LR sweep: {e}") from None
        if outcome.interrupted:
            raise KeyboardInterrupt
        rows += _rows(outcome)
        points = next_points(rows, shapes)
        if not points:
            break
    optima = lr_optima(pd.DataFrame(rows))
    current = preset.ladder.get("rules", {}).get("optim.lr")
    try:
        rule = fit_lr_rule(optima)
        error = None
    except ValueError as e:
        rule, error = None, str(e)
    before = (lambda n: rule_value(current, n)) if current is not None else None
    console.print(markdown(rule, optima, before), soft_wrap=True, markup=False, highlight=False)
    target = None
    if rule is not None:
        # the forecast target is wider than every swept size: the rule's exponent error counts most there
        n_t = float(target_run(preset).n_params)
        spread = math.exp(rule.exponent_se * abs(math.log(n_t / rule.ref))) if math.isfinite(rule.exponent_se) else None
        lr_t = float(rule.lr(n_t))
        target = {"N": n_t, "lr": lr_t, "lr_before": None if current is None else float(rule_value(current, n_t)),
                  "lr_1se": None if spread is None else [lr_t / spread, lr_t * spread]}
        line = f"the preset's target (N {n_t:,.0f}): LR {lr_t:.3g}"
        if spread is not None:
            line += f", {lr_t / spread:.3g}-{lr_t * spread:.3g} within one standard error of the exponent"
        if target["lr_before"] is not None:
            line += f" (the preset's rule: {target['lr_before']:.3g})"
        console.print(line, markup=False, highlight=False)
    record = {"preset": preset.name, "data": preset.ladder.get("base", {}).get("data", {}).get("source"),
              "tokens": tokens, "rounds": k, "rule_before": current,
              "rule": None if rule is None else {"formula": rule.formula(), "coef": rule.coef,
                                                 "exponent": rule.exponent, "exponent_se": rule.exponent_se,
                                                 "ref": rule.ref},
              "target": target,
              "error": error, "sizes": [o.__dict__ | {"flat": o.flat} for o in optima], "rows": rows,
              "wall_time_s": time.time() - t0}
    atomic_write_json(out / RULE_FILE, json.loads(json.dumps(record, default=float)))
    for o in optima:
        if o.flat:
            console.print(f"note: {o.size}: the loss rises {o.octave_rise:.4f} an octave from its optimum, under "
                          f"twice its seed noise ({o.rise_noise:.4f}): the sweep does not locate the optimum")
    if rule is None:
        raise DemoError(f"{error}; rerun with --rounds {rounds + 1} or more (the finished runs are kept)")
    return record


def preset_with_rule(preset: DemoPreset, formula: str, measured: str) -> dict:
    """The preset as a YAML mapping with `formula` as its ladder's LR rule (the ladder and its target both
    take it), its data as given, and a description that says where the rule was measured."""
    from testbed.preset import preset_from_dict

    ladder = copy.deepcopy(preset.ladder)
    ladder.setdefault("rules", {})["optim.lr"] = formula
    fit = {k: (list(v) if isinstance(v, tuple) else v) for k, v in preset.fit.__dict__.items()}
    d = {"name": f"{preset.name}-lr", "description": f"{preset.description}; LR rule measured by testbed lr-rule "
         f"on {measured}", "ladder": ladder, "fit": fit, "target": dict(preset.target), "disk_mb": preset.disk_mb,
         "needs_data": False, "lr_rule_data": str(ladder.get("base", {}).get("data", {}).get("source", measured))}
    preset_from_dict(json.loads(json.dumps(d)), source="the preset written by testbed lr-rule")   # checked before written
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="testbed lr-rule", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory: one sweep per round and lr_rule.json (a rerun resumes it)")
    p.add_argument("--scale", default=None, metavar="PRESET",
                   help=f"a built-in preset ({', '.join(preset_names())}) or a preset YAML file; default: cpu, "
                        "text-cpu with --data")
    p.add_argument("--data", default=None, metavar="PATH", help="the local text corpus the ladder will train on")
    p.add_argument("--widths", default=None, help="ladder widths to sweep, comma-separated (default: the smallest "
                                                  "and largest ladder sizes)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per sweep run (default: the ladder runs' median)")
    p.add_argument("--rounds", type=int, default=3, help="sweep rounds at most: each adds an octave where a size's best "
                                                         "LR is at the grid's edge (default 3)")
    p.add_argument("--jobs", type=int, default=None, help="runs trained at once")
    p.add_argument("--write-preset", default=None, metavar="FILE",
                   help="write the preset with the measured rule (and --data) to FILE, for testbed demo --scale FILE")
    p.add_argument("--quiet", action="store_true")
    ns = p.parse_args(argv)
    try:
        widths = [int(w) for w in ns.widths.split(",")] if ns.widths else None
    except ValueError:
        p.error(f"--widths must be comma-separated whole numbers, got {ns.widths!r}")
    if ns.tokens is not None and ns.tokens < 1:
        p.error(f"--tokens must be >= 1, got {ns.tokens}")
    def work():
        preset = resolve_preset(ns.scale or ("text-cpu" if ns.data else "cpu"), ns.data, ns.jobs)
        if ns.write_preset:
            if Path(ns.write_preset).exists():
                raise DemoError(f"--write-preset {ns.write_preset!r} exists; choose another file or delete it")
            try:   # before the sweep: a file that cannot be written should not cost the runs first
                Path(ns.write_preset).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DemoError(f"--write-preset {ns.write_preset!r}: {e.strerror or e}") from None
        record = measure(ns.out, preset, widths=widths, tokens=ns.tokens, rounds=ns.rounds, quiet=ns.quiet)
        if ns.write_preset:
            d = preset_with_rule(preset, record["rule"]["formula"], ns.data or record["data"])
            Path(ns.write_preset).write_text(yaml_dump(d))
            print(f"preset with the measured rule: {ns.write_preset} (testbed demo --scale {ns.write_preset} "
                  f"--out DIR)")
        print(f"LR rule: {record['rule']['formula']} (was {record['rule_before']}); {Path(ns.out) / RULE_FILE}")

    return run_guarded("lr-rule", work)
