"""Demo presets: a ladder (a sweep spec), how to fit it, and the target to forecast, in one YAML file.

    name: cpu
    description: ...
    ladder: {a sweep spec, as sweeps/spec.py reads it}
    fit: {law: kaplan-schedule | auto, candidates: [...], curves_only: false, select: all | final,
          min_tokens: 204800, bootstrap: 1000, level: 0.9}
    target: {width: 96, depth: 2, compute_ratio: 10.0}
    disk_mb: 50
    needs_data: false   # true: the preset trains only on a corpus given with --data
    lr_rule_data: ...   # where the ladder's LR rule was measured; the demo names it when --data is another corpus

A preset may ship a history of checked forecasts (`testbed/histories/*.json`: the forecast matrix's
targets, each forecast before it trained, then checked): the demo's default `--history`, used only
when the running preset's recipe is the one the history was made with (`recipe_key`) and without
the history's forecasts of the running seed (`shipped_history`).

The built-in presets live in `testbed/presets/` and are named without their path
(`testbed demo --scale cpu`); a path to another YAML file works too. The target is the
ladder's base config at the target shape, with the ladder's per-size rules (learning
rate, batch) applied at its N and its tokens chosen so that its compute is
`compute_ratio` x the largest ladder run's, by the runs' own FLOP convention.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from train.config import ConfigError, RunConfig, did_you_mean
from train.contract import EXIT_BAD_INPUT, EXIT_INTERRUPTED

PRESETS = Path(__file__).parent / "presets"
HISTORIES = Path(__file__).parent / "histories"
TOP_KEYS = ("name", "description", "ladder", "fit", "target", "disk_mb", "needs_data", "lr_rule_data")
FIT_KEYS = ("law", "candidates", "curves_only", "select", "min_tokens", "bootstrap", "level")
TARGET_KEYS = ("width", "depth", "compute_ratio")


class DemoError(ValueError):
    """A demo that cannot start (bad preset, directory or settings); the message says what to do."""


@dataclass(frozen=True)
class FitPlan:
    law: str = "auto"              # a law of analysis.laws, or "auto": chosen by backtests inside the ladder
    candidates: tuple = ()         # laws "auto" chooses among (default: every law the ladder can feed)
    curves_only: bool = False      # auto ranks every candidate but forecasts with laws of whole curves only
    select: str | None = None      # "final" or "all" eval points; default: the law's own (`Law.fitted_on`)
    min_tokens: float = 0          # eval points before this many tokens are not fitted (each run's final point is)
    bootstrap: int = 1000
    level: float = 0.9


@dataclass(frozen=True)
class DemoPreset:
    name: str
    ladder: dict                   # a sweep spec
    fit: FitPlan
    target: dict                   # {"width", "depth", "compute_ratio"}
    description: str = ""
    disk_mb: float = 50.0
    needs_data: bool = False       # the ladder's data.source is a placeholder until with_data
    lr_rule_data: str = ""         # the data the ladder's LR rule was measured on ("": not said)
    source: str = field(default="", compare=False)

    def settings(self) -> dict:
        """What makes two demos the same demo (how many ladder runs train at once does not)."""
        d = {"name": self.name, "ladder": copy.deepcopy(self.ladder), "fit": self.fit.__dict__ | {},
             "target": dict(self.target)}
        d["ladder"].get("executor", {}).pop("jobs", None)
        return json.loads(json.dumps(d))

    def with_jobs(self, jobs: int) -> "DemoPreset":
        if jobs < 1:
            raise DemoError(f"--jobs must be >= 1, got {jobs}")
        ladder = copy.deepcopy(self.ladder)
        ladder.setdefault("executor", {})["jobs"] = jobs
        return DemoPreset(**{**self.__dict__, "ladder": ladder})

    def with_data(self, source: str) -> "DemoPreset":
        """The same recipe on another corpus (ladder and target alike); `lr_rule_note` says when its LR rule
        was measured on other data."""
        ladder = copy.deepcopy(self.ladder)
        ladder.setdefault("base", {}).setdefault("data", {})["source"] = source
        return DemoPreset(**{**self.__dict__, "ladder": ladder, "needs_data": False})

    def lr_rule_note(self) -> str:
        """A note for a preset whose ladder's LR rule was measured on data other than its own: the rule's
        optimum moves from corpus to corpus (benchmarks/recipe/README.md, sections (2) and (16)). "" when
        the preset does not say where it was measured, or says it was measured on this data."""
        data = str(self.ladder.get("base", {}).get("data", {}).get("source", ""))
        if not self.lr_rule_data or self.lr_rule_data == data:
            return ""
        return (f"the ladder's LR rule was measured on {self.lr_rule_data}; on another corpus measure it first: "
                f"testbed lr-rule --data {data} --out DIR --write-preset FILE, then testbed demo --scale FILE")


def resolve_preset(scale: str, data: str | None = None, jobs: int | None = None) -> DemoPreset:
    """The preset named `scale` (built in, or a YAML file), on `data` when given, training `jobs` runs at once
    when given: what `testbed demo` and `testbed lr-rule` run."""
    preset = load_preset(scale)
    if data:
        preset = preset.with_data(data)
    if jobs is not None:
        preset = preset.with_jobs(jobs)
    return preset


def run_guarded(command: str, work) -> int:
    """Run `work()` for `testbed <command>`: a DemoError or ConfigError prints its message and returns the
    bad-input exit code; an interrupt says a rerun resumes and returns the interrupted one; else 0."""
    try:
        work()
    except (DemoError, ConfigError) as e:
        print(f"{command} error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{command} interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _unknown(keys, allowed, where: str) -> None:
    for k in keys:
        if k not in allowed:
            raise DemoError(f"{where}: unknown key {k!r}{did_you_mean(k, allowed)}; known: {', '.join(allowed)}")


def preset_from_dict(d: dict, source: str = "") -> DemoPreset:
    """A validated preset; every problem raises DemoError naming the key."""
    where = source or "demo preset"
    if not isinstance(d, dict):
        raise DemoError(f"{where}: a demo preset is a mapping of {', '.join(TOP_KEYS)}")
    _unknown(d, TOP_KEYS, where)
    for key in ("name", "ladder", "target"):
        if key not in d:
            raise DemoError(f"{where}: missing key {key!r}")
    fit = d.get("fit") or {}
    _unknown(fit, FIT_KEYS, f"{where}: fit")
    target = d["target"]
    _unknown(target, TARGET_KEYS, f"{where}: target")
    for key in TARGET_KEYS:
        if key not in target:
            raise DemoError(f"{where}: target.{key} is missing")
    if not (isinstance(target["compute_ratio"], (int, float)) and target["compute_ratio"] > 1):
        raise DemoError(f"{where}: target.compute_ratio must be a number > 1, got {target['compute_ratio']!r}")
    if not isinstance(d.get("needs_data", False), bool):
        raise DemoError(f"{where}: needs_data must be true or false, got {d['needs_data']!r}")
    if not isinstance(d.get("lr_rule_data", ""), str):
        raise DemoError(f"{where}: lr_rule_data must be a string (the data the LR rule was measured on), "
                        f"got {d['lr_rule_data']!r}")
    if not isinstance(fit.get("candidates") or [], list):
        raise DemoError(f"{where}: fit.candidates must be a list of laws, got {fit['candidates']!r}")
    plan = FitPlan(**{**fit, "candidates": tuple(fit.get("candidates") or ())})
    if plan.select not in (None, "final", "all"):
        raise DemoError(f"{where}: fit.select must be final or all, got {plan.select!r}")
    if not 0 < plan.level < 1 or plan.bootstrap < 1:
        raise DemoError(f"{where}: fit.level must lie in (0, 1) and fit.bootstrap be >= 1")
    if not isinstance(plan.curves_only, bool):
        raise DemoError(f"{where}: fit.curves_only must be true or false, got {plan.curves_only!r}")
    from analysis.laws import get_law
    for key, names in (("law", [] if plan.law == "auto" else [plan.law]), ("candidates", plan.candidates)):
        for name in names:
            try:
                get_law(name)
            except ValueError as e:
                raise DemoError(f"{where}: fit.{key}: {e}") from None
    preset = DemoPreset(name=str(d["name"]), ladder=dict(d["ladder"]), fit=plan, target=dict(target),
                        description=str(d.get("description", "")), disk_mb=float(d.get("disk_mb", 50)),
                        needs_data=d.get("needs_data", False), lr_rule_data=d.get("lr_rule_data", ""),
                        source=source)
    ladder_runs(preset)   # the ladder spec is checked (and expanded) before anything trains
    return preset


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def load_preset(name_or_path: str) -> DemoPreset:
    """A built-in preset by name, or a YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        if name_or_path not in preset_names():
            raise DemoError(f"unknown demo preset {name_or_path!r}{did_you_mean(name_or_path, preset_names())}; "
                            f"built in: {', '.join(preset_names())}, or a path to a YAML file")
        path = PRESETS / f"{name_or_path}.yaml"
    try:
        d = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise DemoError(f"cannot read demo preset {str(path)!r}: {str(e).splitlines()[0]}") from None
    return preset_from_dict(d, source=str(path))


def recipe_key(preset: DemoPreset) -> str:
    """A digest of what a forecast's history must share with it: the ladder (sizes, budgets, data source and
    settings, rules, optimizer, schedule) and how the law is chosen. Seeds, names, jobs, the target, and the
    interval's bootstrap and level are left out: a history spans seeds and target shapes, and holds point
    forecasts only."""
    ladder = copy.deepcopy(preset.ladder)
    for key in ("name", "description", "executor"):
        ladder.pop(key, None)
    for part in ("data", "run"):
        ladder.get("base", {}).get(part, {}).pop("seed", None)
    fit = {k: v for k, v in preset.fit.__dict__.items() if k not in ("bootstrap", "level")}
    blob = json.dumps({"ladder": ladder, "fit": fit}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _seed(preset: DemoPreset):
    return preset.ladder.get("base", {}).get("data", {}).get("seed")


def shipped_history(preset: DemoPreset) -> tuple[Path, list[dict]] | None:
    """(file, records) of the history shipped for this preset's recipe (`recipe_key`), or None.

    The records of the preset's own data seed are left out: on the synthetic language that seed draws
    the language and the batches, so those forecasts are this ladder's own and say nothing about its
    misses."""
    key, seed = recipe_key(preset), _seed(preset)
    for path in sorted(HISTORIES.glob("*.json")):
        d = json.loads(path.read_text())
        if d.get("recipe") == key:
            return path, [r for r in d["records"] if r.get("seed") != seed]
    return None


def _spec(d: dict):
    from sweeps.spec import SweepError, spec_from_dict
    try:
        return spec_from_dict(d)
    except (SweepError, ValueError) as e:
        raise DemoError(f"ladder: {e}") from None


def ladder_runs(preset: DemoPreset) -> list:
    """The ladder's planned runs (resolved configs, N, FLOPs), without training anything."""
    from sweeps.expand import expand
    from sweeps.spec import SweepError
    try:
        return expand(_spec(preset.ladder))
    except SweepError as e:
        raise DemoError(f"ladder: {e}") from None


def targets_spec(preset: DemoPreset, targets: list[dict], name: str | None = None) -> dict:
    """A sweep spec of target runs: the ladder's base and rules at each target's shape and compute ratio.

    `targets`: {"width", "depth", "compute_ratio"} each. Tokens are whole batches, at least
    `compute_ratio` x the largest ladder run's compute by the runs' own FLOP convention, so a
    forecast's `compute_ratio` is what the target really costs. Each target is named
    `target-w{width}-d{depth}`, with `-{ratio}x` added when the same shape comes at several ratios
    (`benchmarks/forecast.py --targets 10:w96d2,30:w96d2`); a target given twice is a DemoError. `name`
    (default `demo-{preset}`) is the spec's.
    """
    from sweeps.expand import expand

    c_max = max(r.flops for r in ladder_runs(preset))
    keep = ("base", "base_config", "overrides", "rules", "n_params")
    head = {**{k: preset.ladder[k] for k in keep if k in preset.ladder}, "name": name or f"demo-{preset.name}",
            "family": "grid"}

    shapes = [{**preset.target, **t} for t in targets]
    twice = [k for k, n in Counter((t["width"], t["depth"], t["compute_ratio"]) for t in shapes).items() if n > 1]
    if twice:
        raise DemoError("targets: " + ", ".join(f"w{w} d{d} at {r:g}x" for w, d, r in twice) + " is given twice")
    repeated = Counter((t["width"], t["depth"]) for t in shapes)

    def run_name(t: dict) -> str:
        stem = f"target-w{t['width']}-d{t['depth']}"
        return f"{stem}-{t['compute_ratio']:g}x" if repeated[t["width"], t["depth"]] > 1 else stem

    def spec(shapes: list[dict], tokens: list[int]) -> dict:
        return {**head, "zip": [{"model.width": [t["width"] for t in shapes], "model.depth": [t["depth"] for t in shapes],
                                 "run.name": [run_name(t) for t in shapes], "train.tokens": tokens}]}

    probes = expand(_spec(spec(shapes, [1 << 20] * len(shapes))))   # FLOPs per token and batch of each shape
    tokens = [max(1, math.ceil(t["compute_ratio"] * c_max / r.flops_per_token / r.config.train.batch_tokens))
              * r.config.train.batch_tokens for t, r in zip(shapes, probes, strict=True)]
    return spec(shapes, tokens)


def target_run(preset: DemoPreset, target: dict | None = None):
    """The preset's target run (or `target`'s shape and ratio instead) as a planned run (its N in the ladder's
    convention): see `targets_spec`."""
    from sweeps.expand import expand

    (run,) = expand(_spec(targets_spec(preset, [target or {}])))
    return run


def target_config(preset: DemoPreset, target: dict | None = None) -> RunConfig:
    """The preset's target run (or `target`'s shape and ratio instead), resolved: see `targets_spec`."""
    return target_run(preset, target).config


def yaml_dump(d: dict[str, Any]) -> str:
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=120)
