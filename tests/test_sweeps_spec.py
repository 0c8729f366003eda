"""Sweep specs, expansion and plan diagnostics (no training)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from models.counting import flops_per_token
from sweeps.expand import branch_step, expand
from sweeps.plan import diagnostics, n_opt, plan_rows, totals
from sweeps.spec import SweepError, load_spec, spec_from_dict
from train.schedules import lr_curve

BASE = {
    "model": {"context": 32, "head_dim": 16},
    "data": {"vocab_size": 64},
    "train": {"batch_tokens": 256, "tokens": 4096},
    "eval": {"tokens": 1024, "points": 4},
}
SIZES = [{"width": 16, "depth": 1}, {"width": 32, "depth": 1}, {"width": 48, "depth": 2}, {"width": 64, "depth": 2}]


def spec(**kw):
    return spec_from_dict({"name": "t", "base": BASE, **kw})


# ---------------------------------------------------------------------------
# grid

def test_grid_is_the_cartesian_product_with_zip_groups():
    s = spec(family="grid", axes={"optim.lr": [1e-3, 3e-3, 1e-2], "schedule.kind": ["cosine", "wsd"],
                                  "run.seed": [0, 1]},
             zip=[{"model.width": [16, 32], "model.depth": [1, 2]}])
    runs = expand(s)
    assert len(runs) == 3 * 2 * 2 * 2
    combos = {(r.config.optim.lr, r.config.schedule.kind, r.config.run.seed, r.config.model.width,
               r.config.model.depth) for r in runs}
    assert len(combos) == 24
    # zip keys vary together, never crossed
    assert {(w, d) for *_, w, d in combos} == {(16, 1), (32, 2)}
    assert len({r.run_id for r in runs}) == 24
    assert all(r.config.run.sweep == "t" for r in runs)


def test_run_ids_are_stable_and_match_the_resolved_config():
    """Recorded ids (from another process): a relaunched sweep must find the runs it trained before."""
    a = expand(spec(family="grid", axes={"run.seed": [0, 1]}))
    assert [r.run_id for r in a] == ["gpt-w128-d2-1ebb0b9c", "gpt-w128-d2-7c49e588"]
    # the same run planned by another spec (seeds listed the other way round, base keys in another order)
    b = expand(spec_from_dict({"name": "other", "base": dict(reversed(list(BASE.items()))), "family": "grid",
                               "axes": {"run.seed": [1, 0]}}))
    assert sorted(r.run_id for r in b) == sorted(r.run_id for r in a)
    for r in a:
        assert r.run_id == r.config.resolved().run_id()


@pytest.mark.parametrize("bad, message", [
    ({"family": "grid", "axes": {"model.widht": [16]}}, "model.widht"),
    ({"family": "grid", "axes": {"optim.lr": []}}, "axes.optim.lr is empty"),
    ({"family": "grid"}, "empty grid"),
    ({"family": "grid", "axes": {"optim.lr": ["fast"]}}, "optim.lr"),
    ({"family": "grid", "axes": {"run.seed": [0]}, "zip": [{"model.width": [16, 32], "model.depth": [1]}]},
     "equal lengths"),
    ({"family": "cubes", "axes": {"run.seed": [0]}}, "family"),
    ({"family": "grid", "axes": {"run.seed": [0]}, "axis": {}}, "unknown sweep key 'axis'"),
    ({"family": "ladder", "tokens_per_param": [10]}, "needs sizes"),
    ({"family": "isoflop", "sizes": SIZES, "budgets": ["lots"]}, "budgets"),
    ({"family": "wsd_branches", "sizes": SIZES, "tokens": [1e4]}, "schedule.kind=wsd"),
    ({"family": "ladder", "sizes": [{"widht": 16}], "tokens_per_param": [10]}, "model.widht"),
    ({"family": "grid", "axes": {"run.seed": [0]}, "rules": {"optim.lr": "__import__('os')"}}, "rules.optim.lr"),
    ({"family": "grid", "axes": {"run.seed": [0]}, "rules": {"optim.lr": "-N"}}, "positive"),
    ({"family": "grid", "axes": {"optim.lr": [1e-3]}, "replicates": 0}, "replicates must be a whole number"),
    ({"family": "grid", "axes": {"optim.lr": [1e-3]}, "replicates": "two"}, "replicates must be a whole number"),
    ({"family": "grid", "axes": {"optim.lr": [1e-3]}, "replicates": 1.5}, "replicates must be a whole number"),
    ({"family": "grid", "axes": {"run.seed": [0, 1]}, "replicates": 2}, "replicates: run.seed is also varied"),
    ({"family": "grid", "zip": [{"run.seed": [0, 1], "optim.lr": [1e-3, 2e-3]}], "replicates": 2},
     "replicates: run.seed is also varied"),
])
def test_bad_specs_name_the_problem(bad, message):
    with pytest.raises(SweepError, match=message.replace("(", r"\(").replace(".", r"\.")):
        expand(spec(**bad))


def test_duplicate_runs_are_an_error():
    s = spec(family="grid", axes={"optim.lr": [1e-3, 0.001]})
    with pytest.raises(SweepError, match="duplicate run"):
        expand(s)


def test_base_config_file_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {context: 32, head_dim: 16}\ndata: {vocab_size: 64}\n"
                                         "train: {batch_tokens: 256, tokens: 4096}\n")
    (tmp_path / "s.yaml").write_text("name: f\nbase_config: base.yaml\noverrides: {optim.lr: 0.02}\n"
                                     "family: grid\naxes: {run.seed: [0, 1]}\n")
    runs = expand(load_spec(tmp_path / "s.yaml"))
    assert [r.config.optim.lr for r in runs] == [0.02, 0.02]
    (tmp_path / "bad.yaml").write_text("name: f\nbase_config: nope.yaml\nfamily: grid\naxes: {run.seed: [0]}\n")
    with pytest.raises(SweepError, match="nope.yaml"):
        load_spec(tmp_path / "bad.yaml")


# ---------------------------------------------------------------------------
# isoflop

@pytest.mark.parametrize("convention", ["6N", "kaplan", "exact"])
def test_isoflop_runs_hit_their_budget_within_one_percent(convention):
    budgets = [2e9, 6e9]
    s = spec(family="isoflop", sizes=SIZES, budgets=budgets,
             base={**BASE, "run": {"flop_convention": convention}}, tokens_per_param_range=[0.1, 1e5])
    warnings: list[str] = []
    runs = expand(s, warnings)
    assert {r.tags["budget"] for r in runs} == set(budgets)
    for r in runs:
        fpt = flops_per_token(r.config.model, convention)  # recomputed independently of the plan
        c = fpt * r.config.train.tokens
        assert abs(c / r.tags["budget"] - 1) <= 0.01, (r.run_id, c)
        assert r.config.train.tokens % r.config.train.batch_tokens == 0
    kept = {(r.tags["budget"], r.config.model.width) for r in runs}
    assert len(kept) + len(warnings) == len(budgets) * len(SIZES)


def test_isoflop_budget_too_small_for_the_smallest_model_is_an_error():
    s = spec(family="isoflop", sizes=SIZES, budgets=[1e3])
    with pytest.raises(SweepError, match=r"budgets: 1e\+03 FLOPs leaves no runs"):
        expand(s)


def test_isoflop_drops_combos_outside_the_tokens_per_param_range_with_a_warning():
    s = spec(family="isoflop", sizes=SIZES, budgets=[6e9], tokens_per_param_range=[1, 50])
    warnings: list[str] = []
    runs = expand(s, warnings)
    assert all(1 <= r.tokens / r.n_params <= 50 for r in runs)
    assert warnings and all("tokens/param" in w or "budget" in w for w in warnings)


# ---------------------------------------------------------------------------
# ladder

def test_ladder_ratios_are_tokens_per_parameter():
    s = spec(family="ladder", sizes=SIZES, tokens_per_param=[5, 10, 20, 40], n_params="non_embedding")
    runs = expand(s)
    assert len(runs) == len(SIZES) * 4
    for r in runs:
        assert r.n_params == r.params["non_embedding"]
        m = r.tags["tokens_per_param"]
        # whole batches: within half a batch of M * N
        assert abs(r.tokens - m * r.n_params) <= r.config.train.batch_tokens / 2
    for m in (5, 10, 20, 40):
        ratios = [r.tokens / r.n_params for r in runs if r.tags["tokens_per_param"] == m]
        assert np.allclose(ratios, m, rtol=0.05)


def test_size_ladder_and_widths_use_the_shape_rule():
    s = spec(family="ladder", sizes={"ladder": {"min_params": 3e3, "max_params": 1e5, "n": 4}},
             tokens_per_param=[10], n_params="non_embedding")
    ns = [r.n_params for r in expand(s)]
    assert len(ns) == 4 and ns == sorted(ns) and len(set(ns)) == 4
    s = spec(family="ladder", sizes={"widths": [16, 32, 64]}, tokens_per_param=[10])
    assert [r.config.model.width for r in expand(s)] == [16, 32, 64]


def test_rules_set_per_size_values():
    s = spec(family="ladder", sizes=SIZES, tokens_per_param=[10], n_params="non_embedding",
             rules={"optim.lr": "0.01 * (N / 1e4) ** -0.5"})
    for r in expand(s):
        assert math.isclose(r.config.optim.lr, 0.01 * (r.n_params / 1e4) ** -0.5)
    # a power-law batch rule snaps to whole sequences and sets the batch before tokens are derived
    s = spec(family="ladder", sizes=SIZES, tokens_per_param=[10], n_params="non_embedding",
             rules={"train.batch_tokens": {"coef": 300, "exponent": 0.5, "ref": 1e4}})
    for r in expand(s):
        bt = r.config.train.batch_tokens
        assert bt % 32 == 0 and abs(bt - 300 * (r.n_params / 1e4) ** 0.5) <= 16
        assert r.tokens % bt == 0


# ---------------------------------------------------------------------------
# wsd branches

def test_wsd_branches_equal_from_scratch_runs_and_start_in_the_parents_stable_phase():
    base = {**BASE, "schedule": {"kind": "wsd", "warmup_steps": 4, "decay_frac": 0.25, "decay_shape": "sqrt"}}
    tokens = [4096, 8192, 16384]
    runs = expand(spec(family="wsd_branches", base=base, sizes=SIZES[:2], tokens=tokens))
    assert len(runs) == 2 * len(tokens)
    by_id = {r.run_id: r for r in runs}
    branches = [r for r in runs if r.parent]
    assert len(branches) == 2 * (len(tokens) - 1)
    assert all(not r.parent for r in runs[: len(runs) - len(branches)])  # parents first
    for b in branches:
        p = by_id[b.parent]
        assert p.config.train.tokens == max(tokens)
        assert b.branch_step in p.config.run.ckpt_steps
        # the branch's config is the from-scratch WSD run of its own length
        scratch = spec_from_dict({"name": "t", "base": {**base, "train": {**BASE["train"], "tokens": b.tokens}},
                                  "family": "grid", "zip": [{k: [v] for k, v in
                                                            {"model.width": b.config.model.width,
                                                             "model.depth": b.config.model.depth}.items()}]})
        assert expand(scratch)[0].run_id == b.run_id
        # identical lr up to the branch step, and the branch decays right after it
        k = b.branch_step
        lr_b = lr_curve(b.config.steps, b.config.optim.lr, b.config.schedule)
        lr_p = lr_curve(p.config.steps, p.config.optim.lr, p.config.schedule)
        assert np.array_equal(lr_b[:k], lr_p[:k])
        assert lr_b[k] < lr_b[k - 1] and lr_p[k] == lr_p[k - 1]
        assert branch_step(b.config.steps, b.config.schedule) == k


def test_replicates_train_every_wsd_run_again_from_the_next_seeds():
    base = {**BASE, "run": {"seed": 7}, "schedule": {"kind": "wsd", "warmup_steps": 4, "decay_frac": 0.25}}
    kw = dict(family="wsd_branches", base=base, sizes=SIZES[:2], tokens=[4096, 8192, 16384])
    once, thrice = expand(spec(**kw)), expand(spec(**kw, replicates=3))
    assert len(thrice) == 3 * len(once) == 18
    assert len({r.run_id for r in thrice}) == 18
    by_id = {r.run_id: r for r in thrice}
    for seed in (7, 8, 9):
        rep = [r for r in thrice if r.config.run.seed == seed]
        # each replicate is the single run's design with only the init seed changed
        assert sorted((r.config.model.width, r.tokens, r.branch_step) for r in rep) == \
            sorted((r.config.model.width, r.tokens, r.branch_step) for r in once)
        assert all(by_id[r.parent].config.run.seed == seed for r in rep if r.parent)   # a branch keeps its init
    first = {(r.config.model.width, r.tokens): r.config for r in once}
    for r in thrice:
        other = first[(r.config.model.width, r.tokens)]
        assert r.config.to_dict() | {"run": {**r.config.to_dict()["run"], "seed": 7}} == other.to_dict()
    assert expand(spec(**kw, replicates=1)) == once


# ---------------------------------------------------------------------------
# plan diagnostics

def _runs(family, **kw):
    return expand(spec(family=family, **kw))


def test_besiroglu_prior_is_about_20_tokens_per_parameter():
    for c in (1e18, 1e21, 1e24):
        n = n_opt(c)
        assert 10 < c / (6 * n) / n < 40  # D/N at the optimum (Besiroglu et al. 2024: ~20)
    assert math.isclose(n_opt(1.2e21, "tpp20"), math.sqrt(1.2e21 / 120))


def test_isoflop_not_bracketing_the_prior_optimum_is_flagged():
    # a small budget (prior optimum below the smallest size) and a huge one (above the largest)
    runs = _runs("isoflop", sizes=SIZES, budgets=[1e9, 1e14], tokens_per_param_range=[0.1, 1e7])
    diags = [d for d in diagnostics(runs, "isoflop") if "do not bracket" in d]
    assert len(diags) == 2
    assert "1e+09" in diags[0] and "above it" in diags[0]
    assert "1e+14" in diags[1] and "below it" in diags[1]


def test_collinear_design_and_too_few_sizes_are_flagged():
    # one tokens/param ratio: D grows with N in lockstep
    runs = _runs("ladder", sizes=SIZES, tokens_per_param=[20])
    diags = diagnostics(runs, "ladder")
    assert any("collinear" in d for d in diags)
    runs = _runs("ladder", sizes=SIZES[:2], tokens_per_param=[5, 10, 20])
    diags = diagnostics(runs, "ladder")
    assert any("only 2 model size(s)" in d for d in diags)


def test_a_good_design_is_quiet():
    # 4 sizes x 3 ratios: N and D vary independently
    # (one sequence per batch, so that every run trains past the early plateau's 300 steps)
    one_seq = {**BASE, "train": {**BASE["train"], "batch_tokens": 32}}
    runs = expand(spec_from_dict({"name": "t", "base": one_seq, "family": "ladder", "sizes": SIZES,
                                  "tokens_per_param": [5, 20, 80], "n_params": "non_embedding"}))
    assert min(-(-r.tokens // 32) for r in runs) >= 300
    assert diagnostics(runs, "ladder") == []
    # a budget whose sizes bracket the prior optimum
    c = 1e11
    opt = n_opt(c)
    runs = _runs("isoflop", sizes=SIZES, budgets=[c], tokens_per_param_range=[0.1, 1e7])
    ns = [r.n_params for r in runs]
    assert min(ns) < opt < max(ns)
    assert not [d for d in diagnostics(runs, "isoflop") if "bracket" in d]


def test_plan_rows_and_totals():
    from sweeps.estimate import eval_tokens, fixed_rate
    runs = _runs("ladder", sizes=SIZES, tokens_per_param=[5, 10])
    rows = plan_rows(runs, fixed_rate(1e9))
    assert [r["run_id"] for r in rows] == [r.run_id for r in runs]
    for row, r in zip(rows, runs):
        # training FLOPs plus the evaluations' forward FLOPs (a third of training's per token)
        assert row["est_seconds"] == pytest.approx((r.flops + eval_tokens(r) * r.flops_per_token / 3) / 1e9)
        assert row["C"] == pytest.approx(flops_per_token(r.config.model, r.config.run.flop_convention) * r.tokens)
    t = totals(rows, jobs=2)
    assert t["runs"] == len(runs) and t["est_seconds_serial"] == pytest.approx(sum(r["est_seconds"] for r in rows))
    # the local pool starts runs in order on the first free worker
    assert totals([{"C": 1.0, "est_seconds": s} for s in (4.0, 1.0, 1.0, 1.0, 1.0)], jobs=2)[
        "est_seconds_parallel"] == pytest.approx(4.0)


def test_the_plans_total_compute_counts_a_wsd_branchs_shared_prefix_once():
    base = {**BASE, "schedule": {"kind": "wsd", "warmup_steps": 4, "decay_frac": 0.25, "decay_shape": "sqrt"}}
    runs = expand(spec(family="wsd_branches", base=base, sizes=SIZES[:2], tokens=[4096, 8192, 16384]))
    rows = plan_rows(runs, None)
    stable = [r for r in runs if not r.parent]
    branches = [r for r in runs if r.parent]
    assert stable and branches
    # a branch trains from its parent's checkpoint: only its steps after the branch step cost compute
    want = sum(r.flops for r in stable) + sum(
        r.flops_per_token * (r.config.steps - r.branch_step) * r.config.train.batch_tokens for r in branches)
    assert totals(rows)["C"] == pytest.approx(want)
    assert totals(rows)["C"] < sum(row["C"] for row in rows)   # the laws' C per run is unchanged
    assert [row["C"] for row in rows] == [r.flops for r in runs]


def test_plan_cli_prints_the_table_and_warnings(tmp_path, capsys):
    import yaml

    from sweeps.cli import main
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "iso", "base": BASE, "family": "isoflop", "sizes": SIZES,
                                 "budgets": [1e9, 1e14], "tokens_per_param_range": [0.1, 1e7]}))
    assert main(["plan", str(p), "--throughput", "1e9"]) == 0
    text = capsys.readouterr().out
    assert "do not bracket" in text and "total compute" in text and "assumed 1e+09 FLOP/s" in text


def test_measured_throughput_gives_positive_times():
    from sweeps.estimate import measure_rates
    runs = _runs("ladder", sizes=SIZES[:2], tokens_per_param=[5])
    rates = measure_rates(runs, min_steps=2, max_steps=3, budget_s=0.1, startup=False)
    assert len(rates.fpt) == 2 and all(r > 0 for r in rates.train_flops_per_s + rates.eval_flops_per_s)
    assert all(rates.seconds(r) > 0 for r in runs)


def test_estimates_use_the_workers_threads_and_the_real_batch(monkeypatch):
    import torch

    import sweeps.estimate as est
    import sweeps.local
    import train.loop
    # 8192-token batches: larger than a small probe batch, which a GPU would run launch-bound
    runs = expand(spec_from_dict({"name": "t", "base": {**BASE, "train": {"batch_tokens": 8192, "tokens": 16384}},
                                  "family": "grid", "axes": {"run.seed": [0]}}))
    seen = []
    real = train.loop.train_step

    def spy(model, optimizer, batch, *a, **kw):
        seen.append((torch.get_num_threads(), tuple(batch.shape)))
        return real(model, optimizer, batch, *a, **kw)

    monkeypatch.setattr(train.loop, "train_step", spy)
    monkeypatch.setattr(sweeps.local.os, "cpu_count", lambda: 3)
    est.measure_rates(runs, jobs=1, min_steps=1, max_steps=1, budget_s=0.0, startup=False)
    # one worker gets every core, as the pool gives it, and steps on the run's whole batch
    assert seen and all(s == (3, (8192 // 32, 33)) for s in seen)


@pytest.mark.slow
def test_several_workers_are_measured_side_by_side(tmp_path):
    from sweeps.estimate import measure_rates
    runs = _runs("ladder", sizes=SIZES[:2], tokens_per_param=[5])
    rates = measure_rates(runs, jobs=2, min_steps=1, max_steps=2, budget_s=0.0, startup=False)
    assert "2 workers of" in rates.how and all(r > 0 for r in rates.train_flops_per_s + rates.eval_flops_per_s)


@pytest.mark.slow
def test_startup_is_timed_through_the_workers_command():
    from sweeps.estimate import measure_startup
    runs = _runs("ladder", sizes=SIZES[:1], tokens_per_param=[5])
    assert 0.2 < measure_startup(runs[0], threads=1) < 120


def test_plan_table_shows_the_seed_axis(tmp_path, capsys):
    import yaml

    from sweeps.cli import main
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump({"name": "seeds", "base": BASE, "family": "grid", "axes": {"run.seed": [0, 7]}}))
    assert main(["plan", str(p), "--throughput", "none"]) == 0
    text = capsys.readouterr().out
    lines = [ln for ln in text.splitlines() if "gpt-" in ln and "│" in ln]
    assert "seed" in text
    assert len(lines) == 2 and lines[0].split("│")[-3].strip() == "0" and lines[1].split("│")[-3].strip() == "7"


@pytest.mark.slow
def test_gpt_and_lstm_runs_are_timed_at_their_own_rates():
    from sweeps.estimate import measure_rates
    runs = _runs("grid", axes={"model.kind": ["gpt", "lstm"], "model.width": [32, 64]})
    rates = measure_rates(runs, min_steps=1, max_steps=2, budget_s=0.0, startup=False)
    assert sorted(rates.kinds) == ["gpt", "gpt", "lstm", "lstm"]
    for r in runs:   # a measured model's own estimate is its own measurement
        i = next(i for i, (k, f) in enumerate(zip(rates.kinds, rates.fpt))
                 if k == r.config.model.kind and f == r.flops_per_token)
        assert rates.parts(r)["train"] == pytest.approx(r.flops / rates.train_flops_per_s[i])
