"""The LR rule measured from LR sweeps: `analysis.lr` on losses from a known bowl, and `testbed lr-rule` end to end."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.lr import fit_lr_rule, lr_optima, markdown
from testbed import lrrule
from testbed.preset import DemoError, PRESETS, load_preset, preset_from_dict, recipe_key


def bowl(n, lr, coef=0.012, exponent=-0.15, ref=2e4, curvature=0.03):
    """A final loss that is quadratic in log2(lr) about lr*(N) = coef (N / ref)^exponent."""
    star = coef * (n / ref) ** exponent
    return 4.0 - 0.1 * math.log(n) + curvature * (math.log2(lr) - math.log2(star)) ** 2


def sweep_table(sizes, lrs, seeds=(0, 1), noise=0.0, seed_term=lambda s, lr: 0.0, **law):
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"size": f"n{n}", "N": n, "lr": lr, "seed": s,
                          "loss": bowl(n, lr, **law) + noise * rng.standard_normal() + seed_term(s, lr)}
                         for n in sizes for lr in lrs for s in seeds])


def test_a_rule_fitted_to_a_known_bowl_recovers_its_constants():
    lrs = [0.0025 * 2 ** k for k in range(6)]              # an octave grid that no optimum sits on
    rule = fit_lr_rule(lr_optima(sweep_table([5e3, 2e4, 8e4], lrs)), ref=2e4)
    assert rule.coef == pytest.approx(0.012, rel=1e-6)
    assert rule.exponent == pytest.approx(-0.15, abs=1e-6)
    assert rule.lr(8e4) == pytest.approx(0.012 * 4 ** -0.15, rel=1e-6)
    assert [o.edge for o in rule.sizes] == ["", "", ""]
    assert rule.exponent_se == pytest.approx(0, abs=1e-9)    # the seeds agree exactly
    # the formula is what a sweep spec's rules hold, and it evaluates to the same LR
    from sweeps.rules import rule_value
    assert rule_value(rule.formula(), 5e3) == pytest.approx(float(rule.lr(5e3)), rel=1e-3)


def test_seed_noise_moves_the_rule_by_little_and_is_reported():
    lrs = [0.0025 * 2 ** k for k in range(6)]
    optima = lr_optima(sweep_table([5e3, 8e4], lrs, seeds=(0, 1, 2), noise=0.002))
    rule = fit_lr_rule(optima, ref=2e4)
    assert rule.coef == pytest.approx(0.012, rel=0.15) and rule.exponent == pytest.approx(-0.15, abs=0.1)
    assert all(0 < o.rise_noise < 0.01 and o.seeds == 3 for o in optima)
    assert not any(o.flat for o in optima)    # the bowl rises 0.03 an octave, against noise ~0.002


def test_the_exponents_standard_error_covers_the_true_exponent_about_as_often_as_it_should():
    """200 sweeps of two sizes, three seeds, seed noise: |exponent - true| < 1.96 se about 95% of the time, less
    for an se from three seeds (a t with 2 degrees of freedom puts 1.96 at 81%)."""
    lrs = [0.0025 * 2 ** k for k in range(6)]
    hits, ses = 0, []
    for k in range(200):
        rng = np.random.default_rng(k)
        t = sweep_table([5e3, 8e4], lrs, seeds=(0, 1, 2))
        t["loss"] += 0.004 * rng.standard_normal(len(t))
        rule = fit_lr_rule(lr_optima(t), ref=2e4)
        hits += abs(rule.exponent + 0.15) < 1.96 * rule.exponent_se
        ses.append(rule.exponent_se)
    assert 0.7 <= hits / 200 <= 1.0
    assert 0.005 < np.median(ses) < 0.2


def test_a_bowl_flatter_than_its_seeds_disagree_is_flagged_and_a_better_seed_is_not_noise():
    lrs = [0.003, 0.006, 0.012, 0.024, 0.048]
    # the seeds' own bowls curve +-0.01 an octave about a shared one that curves 0.0005: nothing is located
    disagree = lr_optima(sweep_table([5e3, 8e4], lrs, curvature=0.0005,
                                     seed_term=lambda s, lr: (0.01 if s else -0.01) * math.log2(lr / 0.012) ** 2))
    assert all(o.flat for o in disagree)
    assert "flat within seed noise" in markdown(None, disagree)
    # one seed 0.05 better at every LR: the means move, the bowl's shape and its optimum do not
    offset = lr_optima(sweep_table([5e3, 8e4], lrs, seed_term=lambda s, lr: 0.05 * s))
    assert not any(o.flat for o in offset) and all(o.rise_noise < 1e-9 for o in offset)


def test_an_optimum_beyond_the_grid_is_named_and_refused():
    low = [0.0005, 0.001, 0.002]                           # every optimum (~0.01) lies above these
    optima = lr_optima(sweep_table([5e3, 8e4], low))
    assert [o.edge for o in optima] == ["high", "high"]
    with pytest.raises(ValueError, match=r"0 of 2 .*n5000.0 best at the largest LR swept \(0.002\): sweep higher"):
        fit_lr_rule(optima)


def test_a_diverged_run_counts_as_worse_than_any_loss():
    t = sweep_table([5e3, 8e4], [0.003, 0.006, 0.012, 0.024, 0.048])
    t.loc[(t["lr"] == 0.012) & (t["seed"] == 1), "loss"] = float("inf")    # the optimum's neighbourhood diverged once
    o = {x.size: x for x in lr_optima(t)}["n5000.0"]
    assert o.best_lr != 0.012 and not math.isfinite(o.mean[o.lrs.index(0.012)])
    assert "diverged" in markdown(None, list(lr_optima(t)))


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="missing loss"):
        lr_optima(pd.DataFrame({"size": ["a"], "N": [1.0], "lr": [0.1], "seed": [0]}))
    with pytest.raises(ValueError, match="empty"):
        lr_optima(pd.DataFrame(columns=["size", "N", "lr", "seed", "loss"]))
    t = sweep_table([5e3], [0.003, 0.006])
    t.loc[0, "N"] = 6e3
    with pytest.raises(ValueError, match="disagree on N"):
        lr_optima(t)


# ---------------------------------------------------------------------------
# testbed lr-rule: the sweep it builds, and the command end to end

def test_the_sweep_is_the_ladders_base_run_at_each_lr():
    preset = load_preset("cpu")
    shapes = lrrule.chosen_shapes(preset, None)
    assert [(s["width"], s["depth"]) for s in shapes] == [(16, 2), (48, 2)]
    assert lrrule.median_tokens(preset) == 409600
    spec = lrrule.round_spec(preset, [(s, s["lr"] * f) for s in shapes for f in (0.5, 1, 2)], 409600, "t")
    from sweeps.expand import expand
    from sweeps.spec import spec_from_dict
    runs = expand(spec_from_dict(spec))
    assert len(runs) == 12                                  # 2 shapes x 3 LRs x the ladder's 2 inits
    ladder = {(r.config.model.width, r.config.run.seed): r.config for r in lrrule.ladder_runs(preset)
              if r.tokens == 819200}
    for r in runs:
        c, rung = r.config, ladder[(r.config.model.width, r.config.run.seed)]
        assert c.train.tokens == 409600 and c.schedule == rung.schedule and c.data == rung.data
        assert c.train.batch_tokens == rung.train.batch_tokens and c.model == rung.model
        assert c.eval.tokens == rung.eval.tokens
        # the LR is the sweep's, around the value the preset's rule gives this size
        assert min(abs(math.log2(c.optim.lr / rung.optim.lr) - k) for k in (-1, 0, 1)) < 1e-4
    with pytest.raises(DemoError, match="--widths: 20 not in the ladder"):
        lrrule.chosen_shapes(preset, [16, 20])


def tiny_preset(lr: float):
    """The mini preset at one init, two sizes and an LR far below its optimum."""
    d = yaml.safe_load((PRESETS / "mini.yaml").read_text())
    d["ladder"]["base"]["optim"]["lr"] = lr
    d["ladder"]["zip"] = [{"model.width": [16, 32], "model.depth": [1, 1], "train.tokens": [5120, 5120]}]
    return preset_from_dict(d, source="test")


@pytest.mark.slow
def test_lr_rule_sweeps_past_the_grid_edge_then_writes_a_preset_the_demo_reads(tmp_path):
    out = tmp_path / "lr"
    preset = tiny_preset(1e-4)                    # the mini ladder's optimum lies far above 1e-4
    with pytest.raises(DemoError, match=r"sweep higher.*rerun with --rounds 3"):
        lrrule.measure(out, preset, tokens=5120, rounds=2, quiet=True)
    first = json.loads((out / lrrule.RULE_FILE).read_text())
    assert first["rule"] is None and first["rounds"] == 2
    assert sorted({r["lr"] for r in first["rows"]}) == pytest.approx([5e-5, 1e-4, 2e-4, 4e-4])
    # more rounds: the finished runs are kept, and the sweep goes on up in octaves until the optimum is inside
    rc = lrrule.main(["--out", str(out), "--scale", _write(tmp_path, preset), "--tokens", "5120", "--rounds", "9",
                      "--write-preset", str(tmp_path / "measured.yaml"), "--quiet"])
    assert rc == 0
    record = json.loads((out / lrrule.RULE_FILE).read_text())
    assert record["rounds"] > 2 and not any(s["edge"] for s in record["sizes"])
    assert all(s["best_lr"] > 1e-3 for s in record["sizes"])
    for s in record["sizes"]:                               # the optimum is the best of the grid's neighbourhood
        i = s["lrs"].index(s["best_lr"])
        assert s["mean"][i] <= min(s["mean"][i - 1], s["mean"][i + 1])
    written = load_preset(str(tmp_path / "measured.yaml"))
    assert written.ladder["rules"]["optim.lr"] == record["rule"]["formula"]
    assert recipe_key(written) != recipe_key(preset)       # a history of the old rule is not this recipe's
    from testbed.preset import ladder_runs, target_config
    from sweeps.rules import rule_value
    for r in ladder_runs(written):
        assert r.config.optim.lr == pytest.approx(rule_value(record["rule"]["formula"], r.n_params), rel=1e-9)
    assert target_config(written).optim.lr > 1e-3            # the target takes the measured rule too
    t = record["target"]                                     # and the LR printed for it is the one it trains at
    assert target_config(written).optim.lr == pytest.approx(t["lr"], rel=2e-3)
    assert t["lr_before"] is None and record["rule_before"] is None   # the mini ladder's LR is one number, no rule
    assert t["lr_1se"] is None                               # one init: no standard error to give a range
    assert written.lr_rule_data == "synthetic" and written.lr_rule_note() == ""


def _write(tmp_path, preset) -> str:
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump({"name": preset.name, "ladder": preset.ladder, "fit": {"law": preset.fit.law,
                                 "select": preset.fit.select, "bootstrap": preset.fit.bootstrap},
                                 "target": preset.target}))
    return str(p)


def test_the_demo_says_when_its_lr_rule_was_measured_on_other_data():
    text = load_preset("text-cpu")
    note = text.with_data("/corpora/mine.txt").lr_rule_note()
    assert "Wikipedia" in note and "testbed lr-rule --data /corpora/mine.txt" in note
    assert load_preset("cpu").lr_rule_note() == ""                     # the synthetic rule on synthetic data
    assert "testbed lr-rule" in load_preset("cpu").with_data("/corpora/mine.txt").lr_rule_note()
    d = yaml.safe_load((PRESETS / "mini.yaml").read_text())
    assert preset_from_dict(d).lr_rule_note() == ""                     # a preset that does not say: no note
    with pytest.raises(DemoError, match="lr_rule_data must be a string"):
        preset_from_dict({**d, "lr_rule_data": 3})


def test_bad_arguments_fail_before_anything_trains(tmp_path, capsys):
    out = tmp_path / "never"
    assert lrrule.main(["--out", str(out), "--widths", "16,20"]) == 2
    assert "--widths: 20 not in the ladder" in capsys.readouterr().err
    assert lrrule.main(["--out", str(out), "--scale", "text-cpu"]) == 2
    assert "give it with --data PATH" in capsys.readouterr().err
    assert lrrule.main(["--out", str(out), "--rounds", "0"]) == 2
    assert "--rounds must be >= 1" in capsys.readouterr().err
    (tmp_path / "exists.yaml").write_text("x")
    assert lrrule.main(["--out", str(out), "--write-preset", str(tmp_path / "exists.yaml")]) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lrrule.main(["--out", str(out), "--widths", "a,b"])
    assert not out.exists()
