"""Sweep specs: a YAML file that names a family of runs (torch-free).

A spec is data. It holds a base run config, a family and its axes, optional
per-size rules and executor defaults:

    name: demo
    base: {model: {context: 64}, train: {batch_tokens: 2048}}   # or base_config: path.yaml
    overrides: {optim.lr: 3e-3}                                 # dotted keys applied to the base
    family: ladder                                              # grid | isoflop | ladder | wsd_branches
    axes: {run.seed: [0, 1]}                                    # cartesian product, every family
    replicates: 2                                               # every run twice, run.seed = base seed + 0, 1
    zip: [{model.width: [64, 128], model.depth: [2, 4]}]        # keys that vary together
    sizes: {ladder: {min_params: 1e4, max_params: 1e5, n: 4}}   # or {widths: [...]} or [{width:, depth:}, ...]
    tokens_per_param: [5, 10, 20]                               # ladder
    budgets: [1e12, 3e12]                                       # isoflop (FLOPs, by run.flop_convention)
    tokens: [2e5, 4e5, 8e5]                                     # wsd_branches (token counts of the cooldowns)
    rules: {optim.lr: "0.003 * (N / 1e6) ** -0.3"}              # per-size rules of N (sweeps.rules)
    executor: {jobs: 2, retries: 1, slurm: {partition: gpu, gpus_per_job: 1, time_min: 60}}

`load_spec` checks every key and value and raises `SweepError` naming the
problem before anything is expanded or run.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sweeps.rules import rule_value
from train.config import ConfigError, RunConfig, apply_overrides, did_you_mean, from_dict, to_dict
from train.contract import N_CONVENTIONS

PRESETS = Path(__file__).parent / "presets"
FAMILIES = ("grid", "isoflop", "ladder", "wsd_branches")
TOP_KEYS = (
    "name", "description", "base", "base_config", "overrides", "family", "axes", "zip", "sizes",
    "budgets", "tokens_per_param", "tokens", "rules", "n_params", "tokens_per_param_range",
    "budget_tolerance", "executor", "replicates",
)


class SweepError(ValueError):
    """A bad sweep spec or sweep directory; the message names the key, file or run."""


@dataclass(frozen=True)
class SlurmDefaults:
    partition: str = ""             # "": the cluster's default partition
    gpus_per_job: int = 0
    cpus_per_job: int = 0           # 0: submitit's default
    mem_gb: float = 0.0             # 0: the cluster's default
    time_min: int = 60              # job time limit
    array_parallelism: int = 256    # jobs of one array running at once
    account: str = ""
    extra: dict = field(default_factory=dict)   # more slurm_* parameters for submitit


@dataclass(frozen=True)
class ExecutorDefaults:
    jobs: int = 1                   # local: runs at once
    retries: int = 0                # extra attempts for a failed run (never for a diverged one)
    slurm: SlurmDefaults = field(default_factory=SlurmDefaults)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    family: str
    base: dict                      # run config dict (base_config and overrides applied)
    axes: dict = field(default_factory=dict)            # key -> tuple of values (cartesian)
    zips: tuple = ()                                    # tuple of {key: tuple} groups varying together
    sizes: Any = None               # None | {"ladder": {...}} | {"widths": [...]} | [{model keys}, ...]
    budgets: tuple = ()
    tokens_per_param: tuple = ()
    tokens: tuple = ()
    rules: dict = field(default_factory=dict)           # dotted key -> rule of N (sweeps.rules)
    n_params: str = "total"         # which parameter count N means (tokens/param, rules, plan)
    tokens_per_param_range: tuple = (1.0, 1000.0)     # isoflop: combos outside are dropped with a warning
    budget_tolerance: float = 0.01  # isoflop: |C_run / C_budget - 1| allowed after rounding to whole batches
    executor: ExecutorDefaults = field(default_factory=ExecutorDefaults)
    replicates: int = 1             # every run trained this many times, run.seed = its seed + 0, 1, ...
    description: str = ""
    source: dict = field(default_factory=dict)          # the spec as written (recorded in sweep.json)

    def base_config(self) -> RunConfig:
        return from_dict(RunConfig, self.base)


# ---------------------------------------------------------------------------
# loading and validation

def _as_list(value: Any, key: str, *, number: bool = False, nonempty: bool = True) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise SweepError(f"{key} must be a list, got {value!r}")
    if nonempty and not value:
        raise SweepError(f"{key} is empty: give at least one value")
    if number:
        out = []
        for v in value:
            try:
                f = float(v)  # YAML reads 1e12 without a dot as a string
            except (TypeError, ValueError):
                raise SweepError(f"{key} must hold numbers, got {v!r}") from None
            if not f > 0:
                raise SweepError(f"{key} must hold positive numbers, got {v!r}")
            out.append(f)
        return tuple(out)
    return tuple(value)


def _check_dotted(base: RunConfig, key: str, value: Any, where: str) -> None:
    """Apply one dotted override to the base, to name an unknown key or a bad value now."""
    try:
        apply_overrides(base, {key: value})
    except ConfigError as e:
        raise SweepError(f"{where}: {e}") from None


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        raise SweepError(f"sweep spec file {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise SweepError(f"cannot parse {str(path)!r}: {e}") from None


def _load_base(raw: dict, base_dir: Path) -> dict:
    if "base" in raw and "base_config" in raw:
        raise SweepError("give either base or base_config, not both")
    base = RunConfig()
    try:
        if "base_config" in raw:
            p = Path(raw["base_config"])
            if not p.is_absolute():
                p = base_dir / p
            d = _read_yaml(p)
            base = from_dict(RunConfig, d or {})
        elif "base" in raw:
            base = from_dict(RunConfig, raw["base"] or {})
    except ConfigError as e:
        raise SweepError(f"base: {e}") from None
    overrides = raw.get("overrides") or {}
    if isinstance(overrides, list):
        try:
            base = apply_overrides(base, overrides)
        except ConfigError as e:
            raise SweepError(f"overrides: {e}") from None
    elif isinstance(overrides, dict):
        for k, v in overrides.items():
            _check_dotted(base, k, v, "overrides")
        base = apply_overrides(base, overrides)
    else:
        raise SweepError("overrides must be a mapping of dotted keys or a list of key=value strings")
    return to_dict(base)


def _load_sizes(value: Any, base: RunConfig) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        if set(value) == {"ladder"}:
            lad = value["ladder"]
            if not isinstance(lad, dict):
                raise SweepError("sizes.ladder must be a mapping (min_params, max_params, n, ...)")
            for k in ("min_params", "max_params", "n"):
                if k not in lad:
                    raise SweepError(f"sizes.ladder needs {k}")
            lo, hi, n = float(lad["min_params"]), float(lad["max_params"]), int(lad["n"])
            if not 0 < lo < hi or n < 1:
                raise SweepError(f"sizes.ladder needs 0 < min_params < max_params and n >= 1, got {lad}")
            return {"ladder": dict(lad)}
        if set(value) == {"widths"}:
            widths = _as_list(value["widths"], "sizes.widths")
            if not all(isinstance(w, int) and w > 0 for w in widths):
                raise SweepError(f"sizes.widths must hold positive integers, got {list(widths)}")
            return {"widths": list(widths)}
        raise SweepError(f"sizes must be a list of shapes, {{ladder: ...}} or {{widths: [...]}}; got keys {sorted(value)}")
    shapes = []
    for i, s in enumerate(_as_list(value, "sizes")):
        if not isinstance(s, dict) or not s:
            raise SweepError(f"sizes[{i}] must be a mapping of model keys, e.g. {{width: 64, depth: 2}}")
        shape = {(k if "." in k else f"model.{k}"): v for k, v in s.items()}
        for k, v in shape.items():
            _check_dotted(base, k, v, f"sizes[{i}]")
        shapes.append(shape)
    return shapes


def _load_executor(value: Any) -> ExecutorDefaults:
    value = dict(value or {})
    slurm = value.pop("slurm", {}) or {}
    try:
        ex = from_dict(ExecutorDefaults, {**value, "slurm": {}}, prefix="executor.")
        sl = from_dict(SlurmDefaults, slurm, prefix="executor.slurm.")
    except ConfigError as e:
        raise SweepError(str(e)) from None
    if ex.jobs < 1 or ex.retries < 0:
        raise SweepError("executor.jobs must be >= 1 and executor.retries >= 0")
    return ExecutorDefaults(jobs=ex.jobs, retries=ex.retries, slurm=sl)


def spec_from_dict(raw: dict, base_dir: str | Path = ".") -> SweepSpec:
    """Validate a spec mapping; every error names the key."""
    if not isinstance(raw, dict):
        raise SweepError("a sweep spec must be a mapping")
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise SweepError(f"unknown sweep key {unknown[0]!r}{did_you_mean(unknown[0], TOP_KEYS)} "
                         f"(known: {', '.join(TOP_KEYS)})")
    name = raw.get("name")
    if not name or not isinstance(name, str):
        raise SweepError("name: every sweep needs a name (a string)")
    family = raw.get("family", "grid")
    if family not in FAMILIES:
        raise SweepError(f"family must be one of {FAMILIES}, got {family!r}{did_you_mean(str(family), FAMILIES)}")
    base_d = _load_base(raw, Path(base_dir))
    base = from_dict(RunConfig, base_d)

    axes_raw = raw.get("axes") or {}
    if not isinstance(axes_raw, dict):
        raise SweepError("axes must be a mapping of dotted config keys to lists of values")
    axes = {}
    for k, vals in axes_raw.items():
        vals = _as_list(vals, f"axes.{k}")
        for v in vals:
            _check_dotted(base, k, v, f"axes.{k}")
        axes[k] = vals
    zips = []
    for i, group in enumerate(raw.get("zip") or []):
        if not isinstance(group, dict) or not group:
            raise SweepError(f"zip[{i}] must be a mapping of dotted keys to equal-length lists")
        group = {k: _as_list(v, f"zip[{i}].{k}") for k, v in group.items()}
        lengths = {len(v) for v in group.values()}
        if len(lengths) != 1:
            raise SweepError(f"zip[{i}]: lists must have equal lengths, got {({k: len(v) for k, v in group.items()})}")
        for k, vals in group.items():
            if k in axes:
                raise SweepError(f"zip[{i}].{k} is also in axes")
            for v in vals:
                _check_dotted(base, k, v, f"zip[{i}].{k}")
        zips.append(group)
    if family == "grid" and not axes and not zips:
        raise SweepError("family grid needs axes (or zip): an empty grid has no runs")

    sizes = _load_sizes(raw.get("sizes"), base)
    if family in ("isoflop", "ladder", "wsd_branches") and sizes is None:
        raise SweepError(f"family {family} needs sizes (a list of shapes, {{ladder: ...}} or {{widths: [...]}})")
    budgets = _as_list(raw["budgets"], "budgets", number=True) if family == "isoflop" or "budgets" in raw else ()
    tpp = (_as_list(raw["tokens_per_param"], "tokens_per_param", number=True)
           if family == "ladder" or "tokens_per_param" in raw else ())
    tokens = _as_list(raw["tokens"], "tokens", number=True) if family == "wsd_branches" or "tokens" in raw else ()
    for fam, key, val in (("isoflop", "budgets", budgets), ("ladder", "tokens_per_param", tpp),
                          ("wsd_branches", "tokens", tokens)):
        if val and family != fam:
            raise SweepError(f"{key} belongs to family {fam}, not {family}")
    if family == "wsd_branches" and base.schedule.kind != "wsd":
        raise SweepError(f"family wsd_branches needs schedule.kind=wsd in the base, got {base.schedule.kind!r}")

    rules = raw.get("rules") or {}
    if not isinstance(rules, dict):
        raise SweepError("rules must map dotted config keys to formulas of N")
    for k, formula in rules.items():
        _check_dotted(base, k, _value_at(base, k), f"rules.{k}")
        evaluate_rule(formula, 1e6, key=f"rules.{k}")  # fail on a bad formula now
    n_params = raw.get("n_params", "total")
    if n_params not in N_CONVENTIONS:
        raise SweepError(f"n_params must be one of {N_CONVENTIONS}, got {n_params!r}")
    rng = _as_list(raw.get("tokens_per_param_range", [1.0, 1000.0]), "tokens_per_param_range", number=True)
    if len(rng) != 2 or rng[0] >= rng[1]:
        raise SweepError(f"tokens_per_param_range must be [low, high] with low < high, got {list(rng)}")
    replicates = raw.get("replicates", 1)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise SweepError(f"replicates must be a whole number >= 1 (how many times each run trains, each with "
                         f"its own run.seed), got {replicates!r}")
    if replicates > 1 and any("run.seed" in group for group in [axes, *zips]):
        raise SweepError("replicates: run.seed is also varied in axes or zip; give the seeds one way, not both "
                         "(replicates adds 0, 1, ... to each run's seed)")
    tol = float(raw.get("budget_tolerance", 0.01))
    if not 0 < tol < 1:
        raise SweepError(f"budget_tolerance must lie in (0, 1), got {tol}")
    return SweepSpec(
        name=name, family=family, base=base_d, axes=axes, zips=tuple(zips), sizes=sizes, budgets=budgets,
        tokens_per_param=tpp, tokens=tuple(int(t) for t in tokens), rules=dict(rules),
        n_params=n_params, tokens_per_param_range=rng, budget_tolerance=tol,
        executor=_load_executor(raw.get("executor")), replicates=replicates, description=str(raw.get("description", "")),
        source=json.loads(json.dumps(raw, default=str)),
    )


def _value_at(base: RunConfig, key: str) -> Any:
    """The base's current value at a dotted key (used to check that a rule's key exists)."""
    node: Any = to_dict(base)
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            raise SweepError(f"rules: unknown config key {key!r}")
        node = node[p]
    return node


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a YAML/JSON sweep spec. A bare name resolves to a preset."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        preset = PRESETS / f"{p.name}.yaml"
        if not preset.exists():
            names = sorted(q.stem for q in PRESETS.glob("*.yaml"))
            raise SweepError(f"{str(path)!r} is neither a spec file nor a preset{did_you_mean(p.name, names)}; "
                             f"presets: {', '.join(names)}")
        p = preset
    raw = _read_yaml(p)
    return spec_from_dict(raw or {}, base_dir=p.parent)


def grid_points(spec: SweepSpec) -> list[dict]:
    """Every combination of `axes` (cartesian) and `zip` groups, as dotted-key overrides."""
    factors: list[list[dict]] = [[{k: v} for v in vals] for k, vals in spec.axes.items()]
    for group in spec.zips:
        keys = list(group)
        factors.append([dict(zip(keys, row)) for row in zip(*group.values())])
    points = []
    for combo in itertools.product(*factors):
        d: dict = {}
        for part in combo:
            d.update(part)
        points.append(d)
    return points


def evaluate_rule(rule: Any, n_params: float, key: str = "rule") -> float:
    """A per-size rule (number, formula string of N, or {coef, exponent, ref}) at N; see sweeps.rules."""
    try:
        return rule_value(rule, float(n_params), key=key)
    except ValueError as e:
        raise SweepError(str(e)) from None
