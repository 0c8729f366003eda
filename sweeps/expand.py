"""Expansion: a SweepSpec -> plain resolved RunConfigs with run ids (torch-free).

Families
--------
grid          cartesian product of `axes` (and `zip` groups) over the base.
isoflop       budgets x sizes; tokens D = C / flops_per_token(model, run.flop_convention),
              rounded to whole batches, so C_run = flops_per_token * D is within
              `budget_tolerance` (1%) of the budget (Hoffmann et al. 2022, Approach 2).
ladder        sizes x tokens-per-parameter ratios M = D / N (Gadre et al. 2024, Sec. 3).
wsd_branches  per size, one WSD run of the longest token count whose stable phase is
              checkpointed at the decay start of every shorter count, and one cooldown
              branch per shorter count started from that checkpoint (Hägele et al. 2024,
              Sec. 3). Each branch's config is exactly the from-scratch WSD run of its own
              length, so its run id and curve are those of an honest run.

`axes`/`zip` multiply every family (e.g. seeds, model.kind, lr); per-size `rules`
are applied after the shape is set and before tokens are derived. `replicates: K`
trains every run K times, run.seed = the base's seed + 0 … K-1 (tagged `run.seed`),
so a ladder's fit averages over initializations without fixing the seeds themselves.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from models.counting import flops_per_token, param_counts
from sweeps import rules
from sweeps.spec import SweepError, SweepSpec, grid_points
from train.config import ConfigError, RunConfig, apply_overrides, data_vocab_size


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    config: RunConfig                   # resolved and validated
    n_params: int                       # N by the spec's convention (total or non_embedding)
    params: dict                        # {"total", "embedding", "non_embedding"}
    flops_per_token: float              # by the run's flop convention
    tags: dict = field(default_factory=dict)   # family facts: budget, tokens_per_param, axis values
    parent: str = ""                    # wsd branch: run id of the stable run it starts from
    branch_step: int = 0                # wsd branch: the parent's step it starts from

    @property
    def tokens(self) -> int:
        return self.config.train.tokens

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens

    def shape(self) -> str:
        m = self.config.model
        return f"{m.kind} w{m.width} d{m.depth} h{m.n_heads}" if m.kind == "gpt" else f"{m.kind} w{m.width} d{m.depth}"


# ---------------------------------------------------------------------------
# sizes

def _shape_overrides(sizes: Any, base: RunConfig) -> list[dict]:
    """The spec's sizes as dotted model overrides (explicit, by width, or a size ladder)."""
    if isinstance(sizes, list):
        return [dict(s) for s in sizes]
    from models import shapes  # torch-free; imported late so grid specs do not need it
    m = base.model
    if "widths" in sizes:
        try:
            out = [shapes.shape_for(width=w, kind=m.kind, head_dim=m.head_dim) for w in sizes["widths"]]
        except ValueError as e:
            raise SweepError(f"sizes.widths: {e}") from None
    else:
        lad = dict(sizes["ladder"])  # extra keys (aspect, lstm_depth, ...) go to the shape rule
        lad.setdefault("kind", m.kind)
        lad.setdefault("head_dim", m.head_dim)
        try:
            out = shapes.size_ladder(float(lad.pop("min_params")), float(lad.pop("max_params")), int(lad.pop("n")),
                                     template=m, **lad)
        except (TypeError, ValueError) as e:
            raise SweepError(f"sizes.ladder: {e}") from None
    if m.kind == "lstm":
        return [{"model.width": s.width, "model.depth": s.depth} for s in out]
    return [{"model.width": s.width, "model.depth": s.depth, "model.heads": s.heads} for s in out]


def _count(cfg: RunConfig, n_conv: str) -> tuple[dict, int, float]:
    params = param_counts(cfg.model)
    return params, int(params[n_conv]), flops_per_token(cfg.model, cfg.run.flop_convention)


def _apply(cfg: RunConfig, overrides: dict, where: str) -> RunConfig:
    try:
        return apply_overrides(cfg, overrides)
    except ConfigError as e:
        raise SweepError(f"{where}: {e}") from None


def _resolve(cfg: RunConfig, where: str) -> RunConfig:
    try:
        return cfg.resolved()
    except ConfigError as e:
        raise SweepError(f"{where}: {e}") from None


def _apply_rules(cfg: RunConfig, spec: SweepSpec, where: str) -> RunConfig:
    """Per-size rules (LR, batch, ...) as functions of N; batch sizes snap to whole sequences."""
    if not spec.rules:
        return cfg
    _, n, _ = _count(cfg, spec.n_params)
    values = {}
    for key, rule in spec.rules.items():
        try:
            if key in ("train.batch_tokens", "train.micro_batch_tokens"):
                values[key] = rules.batch_tokens_for(n, rule, cfg.model.context, key=f"rules.{key}")
            else:
                values[key] = rules.rule_value(rule, n, key=f"rules.{key}")
        except ValueError as e:
            raise SweepError(str(e)) from None
    return _apply(cfg, values, f"{where} rules")


def _batches(tokens: float, batch_tokens: int) -> int:
    return int(round(tokens / batch_tokens))


# ---------------------------------------------------------------------------
# families

def _with_vocab(cfg: RunConfig) -> RunConfig:
    """Fill model.vocab_size from the data (as resolved() does) so parameters can be counted.

    The full validation waits until tokens are set: a base may not fit its own default budget.
    """
    if cfg.model.vocab_size:
        return cfg
    return _apply(cfg, {"model.vocab_size": data_vocab_size(cfg.data)}, "data")


def _grid(cfg: RunConfig, spec: SweepSpec, tags: dict, warnings: list[str]) -> list[tuple[RunConfig, dict]]:
    return [(_apply_rules(_with_vocab(cfg), spec, str(tags)), tags)]


def _sized(cfg: RunConfig, spec: SweepSpec, tags: dict) -> list[tuple[RunConfig, dict]]:
    """The base with each size applied (and the per-size rules)."""
    out = []
    cfg = _with_vocab(cfg)
    for shape in _shape_overrides(spec.sizes, cfg):
        where = f"size {shape}"
        c = _apply_rules(_apply(cfg, shape, where), spec, where)
        out.append((c, {**tags, **{k.split(".")[-1]: v for k, v in shape.items()}}))
    return out


def _isoflop(cfg: RunConfig, spec: SweepSpec, tags: dict, warnings: list[str]) -> list[tuple[RunConfig, dict]]:
    out = []
    lo, hi = spec.tokens_per_param_range
    for budget in spec.budgets:
        kept = []
        for c, t in _sized(cfg, spec, tags):
            params, n, fpt = _count(c, spec.n_params)
            steps = _batches(budget / fpt, c.train.batch_tokens)
            what = f"budget {budget:.3g} FLOPs x {c.model.kind} w{c.model.width} d{c.model.depth} (N={n:,})"
            if steps < 1:
                warnings.append(f"dropped {what}: the budget buys {budget / fpt:,.0f} tokens, below one batch "
                                f"({c.train.batch_tokens} tokens)")
                continue
            tokens = steps * c.train.batch_tokens
            err = fpt * tokens / budget - 1
            if abs(err) > spec.budget_tolerance:
                warnings.append(f"dropped {what}: {steps} whole batches miss the budget by {err:+.1%} "
                                f"(tolerance {spec.budget_tolerance:.0%}); use a smaller train.batch_tokens")
                continue
            tpp = tokens / n
            if not lo <= tpp <= hi:
                warnings.append(f"dropped {what}: {tpp:.3g} tokens/param lies outside "
                                f"tokens_per_param_range [{lo:g}, {hi:g}]")
                continue
            c = _apply(c, {"train.tokens": tokens}, what)
            kept.append((c, {**t, "budget": budget, "tokens_per_param": tpp}))
        if not kept:
            raise SweepError(f"budgets: {budget:.3g} FLOPs leaves no runs (too small for the smallest model, "
                             f"or every size outside tokens_per_param_range); see: " + "; ".join(warnings[-3:]))
        out += kept
    return out


def _ladder(cfg: RunConfig, spec: SweepSpec, tags: dict, warnings: list[str]) -> list[tuple[RunConfig, dict]]:
    out = []
    for c, t in _sized(cfg, spec, tags):
        _, n, _ = _count(c, spec.n_params)
        for m in spec.tokens_per_param:
            steps = _batches(m * n, c.train.batch_tokens)
            what = f"tokens_per_param {m:g} x {c.model.kind} w{c.model.width} d{c.model.depth} (N={n:,})"
            if steps < 1:
                raise SweepError(f"{what}: {m * n:,.0f} tokens is below one batch ({c.train.batch_tokens} tokens)")
            tokens = steps * c.train.batch_tokens
            if abs(tokens / (m * n) - 1) > 0.05:
                warnings.append(f"{what}: whole batches give {tokens / n:.3g} tokens/param")
            out.append((_apply(c, {"train.tokens": tokens}, what), {**t, "tokens_per_param": m}))
    return out


def branch_step(total_steps: int, sched) -> int:
    """Last step of a WSD run's stable phase: every step <= it runs at the peak lr.

    train.schedules decays for steps s > max(total * (1 - decay_frac), warmup_steps), so the
    floor of that boundary is the last stable step; a longer stable run reaches it unchanged.
    """
    return int(math.floor(max(total_steps * (1.0 - sched.decay_frac), float(sched.warmup_steps))))


def _wsd(cfg: RunConfig, spec: SweepSpec, tags: dict, warnings: list[str]) -> list[tuple[RunConfig, dict]]:
    out = []
    for c, t in _sized(cfg, spec, tags):
        bt = c.train.batch_tokens
        counts = sorted({_batches(d, bt) for d in spec.tokens})
        if counts[0] < 1:
            raise SweepError(f"tokens: {min(spec.tokens):g} is below one batch ({bt} tokens)")
        longest = counts[-1]
        branches = {s: branch_step(s, c.schedule) for s in counts[:-1]}
        pinned = tuple(sorted({k for k in branches.values() if k > 0}))
        parent = _resolve(_apply(c, {"train.tokens": longest * bt, "run.ckpt_steps": pinned}, "wsd stable run"),
                          "wsd stable run")
        _, n, _ = _count(parent, spec.n_params)
        out.append((parent, {**t, "role": "stable", "tokens_per_param": longest * bt / n}))
        for s, k in branches.items():
            b = _resolve(_apply(c, {"train.tokens": s * bt}, "wsd branch"), "wsd branch")
            info = {**t, "role": "branch", "tokens_per_param": s * bt / n}
            if k > 0:
                info.update(parent=parent.run_id(), branch_step=k)
            out.append((b, info))
    return out


FAMILY_FNS = {"grid": _grid, "isoflop": _isoflop, "ladder": _ladder, "wsd_branches": _wsd}


def expand(spec: SweepSpec, warnings: list[str] | None = None) -> list[PlannedRun]:
    """All runs of a sweep, resolved and validated, parents before their branches.

    Combos that cannot hit their design (isoFLOP budget below one batch, off-budget after
    rounding, absurd tokens/param) are dropped with a message appended to `warnings`.
    Two combos that resolve to the same config are an error naming both.
    """
    warnings = [] if warnings is None else warnings
    base = spec.base_config()
    base = _apply(base, {"run.sweep": spec.name}, "base")
    runs: list[PlannedRun] = []
    seen: dict[str, dict] = {}
    points = grid_points(spec) or [{}]
    if spec.replicates > 1:   # init replicates: the same runs again, each with its own run.seed
        points = [{**p, "run.seed": base.run.seed + i} for p in points for i in range(spec.replicates)]
    for point in points:
        cfg = _apply(base, point, f"axes {point}")
        tags = {k: v for k, v in point.items()}
        for c, t in FAMILY_FNS[spec.family](cfg, spec, tags, warnings):
            c = _resolve(c, f"run {t}" if t else "base")
            rid = c.run_id()
            if rid in seen:
                raise SweepError(f"duplicate run {rid}: {seen[rid]} and {t} give the same config")
            seen[rid] = t
            params, n, fpt = _count(c, spec.n_params)
            t = dict(t)
            parent, step = t.pop("parent", ""), t.pop("branch_step", 0)
            runs.append(PlannedRun(rid, c, n, params, fpt, t, parent, step))
    if not runs:
        raise SweepError(f"sweep {spec.name!r} expands to no runs")
    # parents first: a branch's stable run must start before it can wait for its checkpoint
    runs.sort(key=lambda r: bool(r.parent))
    return runs
