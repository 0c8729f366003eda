"""The forecast matrix's scripts: `benchmarks/forecast.py --score-only` scores a matrix stopped early, saved
forecasts are redone when the ladder has grown, and `benchmarks/recipe/pool.py` pools its cases with
`demo_fit_look.py`'s rows."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(path):
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _record(predicted, lower, upper):
    """A forecast record as analysis.checked.forecast_record writes it (the fields scoring reads)."""
    return {"law": "kaplan", "predicted": predicted, "lower": lower, "upper": upper,
            "bootstrap_lower": predicted - 0.01, "bootstrap_upper": predicted + 0.01,
            "interval": {"kind": "calibrated"}, "compute_ratio": 10.0, "outside_ladder": [],
            "target": {"N": 1e5, "D": 1e6}, "curve": {"steps": [10, 20], "predicted": [3.5, predicted]}}


def _stopped_matrix(out: Path):
    """Seed 3 of a matrix stopped early: forecasts for two shapes written, one target finished."""
    seed = out / "seed3"
    targets = {"10x w64 d2": "target-w64", "10x w96 d2": "target-w96"}
    recs = {"10x w64 d2": _record(3.03, 2.9, 3.2), "10x w96 d2": _record(3.1, 3.0, 3.2)}
    seed.mkdir(parents=True)
    (seed / "forecasts.json").write_text(json.dumps({"method": 5, "targets": targets, "forecasts": {"auto": recs}}))
    run = seed / "targets" / "target-w64"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"kind": "eval", "step": 10, "val_loss": 3.6}, {"kind": "eval", "step": 20, "val_loss": 3.0})) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": "completed", "final_val_loss": 3.0}))
    (seed / "targets" / "target-w96").mkdir()      # started, never finished: its config, no summary
    (seed / "targets" / "target-w96" / "config.json").write_text("{}")


def test_score_only_scores_the_finished_targets_and_lists_the_rest_as_failed(tmp_path, capsys):
    fm = _script(Path("benchmarks/forecast.py"))
    _stopped_matrix(tmp_path)
    assert fm.main(["--out", str(tmp_path), "--seeds", "3", "--score-only"]) == 0
    rows = {r["shape"]: r for r in json.loads((tmp_path / "cases.json").read_text())}
    done, stopped = rows["10x w64 d2"], rows["10x w96 d2"]
    assert done["actual"] == 3.0 and done["rel_error"] == pytest.approx(0.01) and done["inside"] is True
    assert done["half_width"] == pytest.approx(0.05) and done["curve_are"] == pytest.approx((0.1 / 3.6 + 0.01) / 2)
    assert "did not complete" in stopped["error"]
    assert "1 (+1 failed)" in capsys.readouterr().out
    # a seed whose forecasts were never written is refused by name, and nothing is trained
    with pytest.raises(SystemExit, match=r"seed4/forecasts.json does not exist"):
        fm.main(["--out", str(tmp_path), "--seeds", "4", "--score-only"])
    assert not (tmp_path / "seed4").exists()


def test_saved_forecasts_are_reused_for_the_same_ladder_and_redone_when_it_has_grown(tmp_path, monkeypatch):
    import dataclasses

    import testbed.demo
    from testbed.preset import load_preset

    fm = _script(Path("benchmarks/forecast.py"))
    write_ladder = _script(Path("tests/test_demo_settings.py")).write_ladder
    two = fm.seed_preset(load_preset("cpu"), 0, 1)                      # the preset: every run from two inits
    one = dataclasses.replace(two, ladder={**two.ladder, "replicates": 1})
    ladders = {"one": write_ladder(tmp_path / "one", one), "two": write_ladder(tmp_path / "two", two)}
    current = ["one"]
    monkeypatch.setattr(testbed.demo, "run_ladder", lambda out, preset, quiet: ladders[current[0]])
    targets, seed_dir = [{"compute_ratio": 10.0, "width": 64, "depth": 2}], tmp_path / "seed0"

    def forecasts():
        saved = fm.forecast_seed(two, targets, ["kaplan-schedule"], seed_dir, bootstrap=8)
        return saved, saved["forecasts"]["kaplan-schedule"]["10x w64 d2"]

    first, rec1 = forecasts()
    assert len(first["ladder_runs"]) == 12 and rec1["target"]["N"] > 0
    current[0] = "two"      # the second inits have trained since: the forecast is fitted again on all 24 runs
    second, rec2 = forecasts()
    assert len(second["ladder_runs"]) == 24 and set(first["ladder_runs"]) != set(second["ladder_runs"])
    assert rec2["predicted"] != rec1["predicted"]
    # the same ladder again: the saved forecasts stand, nothing is fitted
    monkeypatch.setattr(testbed.demo, "fit_ladder", lambda *a, **k: pytest.fail("refitted an unchanged ladder"))
    third, rec3 = forecasts()
    assert third == second


def test_pool_reads_forecast_cases_in_percent_beside_demo_fit_look_rows(tmp_path):
    fm = _script(Path("benchmarks/forecast.py"))
    pool = _script(Path("benchmarks/recipe/pool.py"))
    _stopped_matrix(tmp_path)
    fm.main(["--out", str(tmp_path), "--seeds", "3", "--score-only"])
    look = tmp_path / "look.json"
    look.write_text(json.dumps([{"method": "auto", "err": -3.0, "inside": False, "halfw": 2.0},
                                {"method": "kaplan", "err": 9.0, "inside": True, "halfw": 9.0}]))
    label, rows = pool.cases(f"mixed={tmp_path / 'cases.json'},{look}", "auto")
    assert label == "mixed" and len(rows) == 2        # the unfinished target and the other method are left out
    assert sorted(r["err"] for r in rows) == pytest.approx([-3.0, 1.0])
    assert pool.row(label, rows) == "| mixed | 2 | 2.00% | 3.00% | 1/2 (50%) | ±3.50% (1.8x) |"
    with pytest.raises(SystemExit, match="no rows of method 'chinchilla'"):
        pool.cases(f"x={look}", "chinchilla")
    assert pool.parts_row(label, rows) is None          # rows written before the parts were recorded


def test_pool_says_what_the_intervals_were_made_of(tmp_path):
    pool = _script(Path("benchmarks/recipe/pool.py"))
    base = {"law": "auto", "rel_error": 0.01, "half_width": 0.03, "inside": True}
    rows = [{**base, "sigma_parts": {"bootstrap": 0.03, "scatter": 0.0, "extrapolation": 0.0, "between_laws": 0.04}},
            {**base, "sigma_parts": {"bootstrap": 0.0, "scatter": 0.0, "extrapolation": 0.01, "between_laws": 0.0}},
            base]                                        # an older row without parts is counted, not averaged
    (tmp_path / "c.json").write_text(json.dumps(rows))
    label, got = pool.cases(f"s={tmp_path / 'c.json'}", "auto")
    # sigmas 0.05 and 0.01 (mean 3%); shares: bootstrap (0.36 + 0) / 2, extrapolation (0 + 1) / 2, laws (0.64 + 0) / 2
    assert pool.parts_row(label, got) == "| s | 2/3 | 3.00% | 18% | 0% | 50% | 32% |"


def test_pool_keeps_one_compute_ratio_after_an_at_sign(tmp_path):
    pool = _script(Path("benchmarks/recipe/pool.py"))
    rows = [{"law": "auto", "ratio": r, "rel_error": e, "half_width": 0.05, "inside": True}
            for r, e in ((10.0, 0.01), (30.0, -0.04), (10.0, 0.02))]
    (tmp_path / "c.json").write_text(json.dumps(rows))
    assert [r["err"] for r in pool.cases(f"t={tmp_path / 'c.json'}@10", "auto")[1]] == pytest.approx([1.0, 2.0])
    assert [r["err"] for r in pool.cases(f"t={tmp_path / 'c.json'}@30", "auto")[1]] == pytest.approx([-4.0])
    assert len(pool.cases(f"t={tmp_path / 'c.json'}", "auto")[1]) == 3
    with pytest.raises(SystemExit, match="no rows of method 'auto' at 100x"):
        pool.cases(f"t={tmp_path / 'c.json'}@100", "auto")
    with pytest.raises(SystemExit, match="@ten is not a compute ratio"):
        pool.cases(f"t={tmp_path / 'c.json'}@ten", "auto")


def test_a_target_given_twice_is_refused_before_anything_trains(tmp_path, capsys):
    fm = _script(Path("benchmarks/forecast.py"))
    with pytest.raises(SystemExit):
        fm.main(["--out", str(tmp_path), "--targets", "10:w64d2,30:w64d2,10:w64d2"])
    assert "--targets: w64 d2 at 10x is given twice" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert fm.parse_targets("10:w64d2,30:w64d2") == [{"compute_ratio": 10.0, "width": 64, "depth": 2},
                                                     {"compute_ratio": 30.0, "width": 64, "depth": 2}]


def test_long_adds_a_100x_target_per_10x_shape_once():
    fm = _script(Path("benchmarks/forecast.py"))
    asked = fm.parse_targets("10:w64d2,30:w96d2,100:w128d2")
    assert [(t["compute_ratio"], t["width"]) for t in fm.with_long(asked)] == [(10, 64), (30, 96), (100, 128)]
    asked = fm.parse_targets("10:w64d2,10:w96d2")
    assert [(t["compute_ratio"], t["width"]) for t in fm.with_long(asked)] == [(10, 64), (10, 96), (100, 128), (100, 192)]


def test_interval_rules_rescore_cases_from_their_parts(tmp_path):
    rules = _script(Path("benchmarks/recipe/interval_rules.py"))
    pool = _script(Path("benchmarks/recipe/pool.py"))
    parts = {"bootstrap": 0.006, "scatter": 0.0, "extrapolation": 0.008, "between_laws": 0.0}   # stat part 0.01
    base = {"law": "auto", "half_width": 0.0, "inside": True, "quantile": 2.0}
    rows = [{**base, "rel_error": np.expm1(0.015), "sigma_parts": parts},                    # |log err| 0.015
            {**base, "rel_error": np.expm1(-0.025), "sigma_parts": {**parts, "between_laws": 0.01}},   # 0.025
            {**base, "rel_error": 0.5}]                                                     # no parts: left out
    (tmp_path / "c.json").write_text(json.dumps(rows))
    got = rules.score(pool.cases(f"s={tmp_path / 'c.json'}", "auto")[1])
    z = 1.6448536269514722
    # half-widths by hand: as printed (quantile 2) 0.02 and 0.0283, normal 0.0164 and 0.0233 (covers the first only); median 0.02
    for rule, covered, mean_hw in [("as printed", 2, (0.02 + 0.02 * np.sqrt(2)) / 2),
                                   ("normal quantile", 1, z * (0.01 + 0.01 * np.sqrt(2)) / 2),
                                   ("no laws' spread", 1, 0.02), ("laws' spread apart", 2, (0.02 + 0.02 + z * 0.01) / 2)]:
        assert got[rule] == (covered, pytest.approx(mean_hw / 0.02), pytest.approx(mean_hw)), rule
    # sigma by hand: 0.01 and sqrt(0.01^2 + 0.01^2); |log error| / sigma 1.5 and 0.025 / 0.01414 = 1.768
    np.testing.assert_allclose(rules.z_scores(pool.cases(f"s={tmp_path / 'c.json'}", "auto")[1]),
                               [1.5, 0.025 / (0.01 * np.sqrt(2))], rtol=1e-9)


def test_pool_weights_autos_ensembles_equally_from_the_member_laws_rows(tmp_path):
    pool = _script(Path("benchmarks/recipe/pool.py"))
    row = {"seed": 1, "data": "synthetic", "ratio": 10.0, "half_width": 0.03, "inside": True}
    rows = [{**row, "shape": "a", "law": "auto", "chosen_law": "mix:kaplan-schedule=0.8,schedule=0.2",
             "rel_error": -0.012},
            {**row, "shape": "a", "law": "kaplan-schedule", "rel_error": -0.02},
            {**row, "shape": "a", "law": "schedule", "rel_error": 0.01},
            {**row, "shape": "b", "law": "auto", "chosen_law": "schedule", "rel_error": 0.03},   # one law: as is
            {**row, "shape": "c", "law": "auto", "chosen_law": "mix:kaplan-schedule=0.5,schedule=0.5",
             "rel_error": 0.0}]                                  # its members' rows are missing: left out
    (tmp_path / "c.json").write_text(json.dumps(rows))
    label, got = pool.cases(f"eq={tmp_path / 'c.json'}", "equal-weights")
    assert sorted(r["err"] for r in got) == pytest.approx([-0.5, 3.0])        # (-2 + 1) / 2, and 3
    assert pool.row(label, got) == "| eq | 2 | 1.75% | 3.00% | - | - |"


def test_size_holdout_forecasts_the_largest_size_from_the_others():
    """Runs of four sizes drawn from a known Kaplan law: the law fitted without the largest size forecasts that
    size's runs (and only those) within the noise; with a wrong exponent in the data's largest size the errors
    show it; three sizes are the fewest it accepts."""
    import pandas as pd

    from analysis.laws import get_law

    sh = _script(Path("benchmarks/recipe/size_holdout.py"))
    kap = {"Nc": 3e9, "Dc": 2e7, "alpha_N": 0.09, "alpha_D": 0.12}
    sizes, budgets = np.array([6e3, 1.4e4, 2.5e4, 5.5e4]), np.array([4.1e5, 8.2e5, 1.64e6])
    N, D = (a.ravel() for a in np.meshgrid(sizes, budgets, indexing="ij"))
    loss = get_law("kaplan").predict(kap, N=N, D=D)
    table = pd.DataFrame({"run": [f"r{i}" for i in range(N.size)], "N": N, "D": D, "C": 6 * N * D, "step": 1,
                          "final": True, "loss": loss})
    got = sh.size_holdout(table, "kaplan", "final")
    assert sorted(got["run"]) == sorted(table.loc[table["N"] == sizes[-1], "run"])
    assert np.abs(got["e"]).max() < 5e-3         # the right law, fitted on three sizes: within half a percent
    np.testing.assert_allclose(got["e"], np.log(got["actual"] / got["predicted"]), rtol=1e-12)
    # the largest size's losses 2% above the law: each of its forecasts misses by about ln(1.02)
    off = table.assign(loss=np.where(table["N"] == sizes[-1], table["loss"] * 1.02, table["loss"]))
    shifted = sh.size_holdout(off, "kaplan", "final")["e"].to_numpy()
    np.testing.assert_allclose(shifted, got["e"].to_numpy() + np.log(1.02), atol=1e-9)
    with pytest.raises(ValueError, match="at least three model sizes"):
        sh.size_holdout(table[table["N"] < sizes[2]], "kaplan", "final")


def test_corner_holdout_forecasts_the_largest_size_at_the_longest_budget():
    """Runs of four sizes x three budgets drawn from a known Kaplan law: fitted on the smaller sizes at the
    shorter budgets, the law forecasts the one corner run (largest size, longest budget) within the noise, at
    the distance ln(its C / the largest fitted C); a corner 2% above the law shows as that miss; a ladder of
    two budgets has no corner to hold out."""
    import pandas as pd

    from analysis.laws import get_law

    sh = _script(Path("benchmarks/recipe/size_holdout.py"))
    kap = {"Nc": 3e9, "Dc": 2e7, "alpha_N": 0.09, "alpha_D": 0.12}
    sizes, budgets = np.array([6e3, 1.4e4, 2.5e4, 5.5e4]), np.array([4.1e5, 8.2e5, 1.64e6])
    N, D = (a.ravel() for a in np.meshgrid(sizes, budgets, indexing="ij"))
    table = pd.DataFrame({"run": [f"r{i}" for i in range(N.size)], "N": N, "D": D, "C": 6 * N * D, "step": 1,
                          "final": True, "loss": get_law("kaplan").predict(kap, N=N, D=D)})
    got = sh.corner_holdout(table, "kaplan", "final")
    corner = table[(table["N"] == sizes[-1]) & (table["D"] == budgets[-1])]
    assert list(got["run"]) == list(corner["run"])
    assert abs(float(got["e"].iloc[0])) < 5e-3
    assert float(got["x"].iloc[0]) == pytest.approx(np.log(sizes[-1] * budgets[-1] / (sizes[-2] * budgets[-2])))
    off = table.assign(loss=np.where(table["run"].isin(corner["run"]), table["loss"] * 1.02, table["loss"]))
    np.testing.assert_allclose(sh.corner_holdout(off, "kaplan", "final")["e"], got["e"] + np.log(1.02), atol=1e-9)
    with pytest.raises(ValueError, match="three final token counts"):
        sh.corner_holdout(table[table["D"] < budgets[-1]], "kaplan", "final")


def test_ladder_ranks_rebuilds_sigma_from_another_rate_and_scores_it():
    """A row's sigma under each rule, by hand: shipped is the root sum of its parts; a rule built on a rate
    rebuilds only the extrapolation part (rate x ln of the compute ratio); dropping the laws' spread drops
    that part. The scores: coverage at the normal quantile, mean half-width sinh(z sigma) over the median
    miss, rms and 90th percentile of e / sigma."""
    lr = _script(Path("benchmarks/recipe/ladder_ranks.py"))
    row = {"sigma_parts": {"bootstrap": 0.003, "scatter": 0.004, "extrapolation": 0.012, "between_laws": 0.005},
           "compute_ratio": 10.0, "target_N": 2e5}
    # backtests no worse than the scatter: every rate measured from them is 0
    m = {"s0": 0.004, "k": 0.0, "N_max": 1e5, "roll_x": [0.5, 1.0], "roll_e": [0.0, 0.0],
         "size_x": [0.7], "size_e": [0.0], "size_xN": [0.8]}
    assert lr.sigma("shipped", row, m) == pytest.approx(np.sqrt(0.003**2 + 0.004**2 + 0.012**2 + 0.005**2))
    assert lr.sigma("k from the size holdout", row, m) == pytest.approx(np.sqrt(0.003**2 + 0.004**2 + 0.005**2))
    assert lr.sigma("no laws' spread", row, m) == pytest.approx(np.sqrt(0.003**2 + 0.004**2 + 0.012**2))
    # a size-holdout miss far beyond the scatter sets a positive rate; "the larger k" takes it over rollout's 0
    m_big = {**m, "size_e": [0.05]}
    k = lr.rates(m_big)["size"]
    assert k > 0 and lr.rates(m_big)["larger"] == k
    assert lr.sigma("the larger k", row, m_big) == pytest.approx(
        np.sqrt(0.003**2 + 0.004**2 + (k * np.log(10.0))**2 + 0.005**2))
    with pytest.raises(ValueError, match="unknown rule"):
        lr.sigma("no such rule", row, m)
    e, s = np.array([0.01, -0.015, 0.005, 0.04]), np.full(4, 0.01)
    cells = lr.scored(e, s, np.expm1(e)).split(" | ")
    assert cells[0] == "3/4"                     # |e| <= 1.645 sigma for all but the 0.04 miss
    hw, med = np.sinh(lr.Z * 0.01), np.median(np.abs(np.expm1(e)))
    assert cells[1] == f"±{hw:.2%} ({hw / med:.1f}x)"
    assert cells[2] == f"{np.sqrt(np.mean((e / 0.01) ** 2)):.2f}"
    assert cells[3] == f"{np.percentile(np.abs(e / 0.01), 90):.2f}"


def test_history_rule_calibrates_per_corpus_and_scores_other_rows(tmp_path, capsys):
    """Ten synthetic and ten Wikipedia history rows at 10x whose log misses are 0.001 i ln 10 and 0.002 i ln 10:
    q is each corpus's largest score (the 10th of 10 at 90%), 0.010 and 0.020; a scored row with a log miss of
    0.015 at 10x is inside the synthetic interval (q ln 10 = 0.023) and one of 0.05 is outside the Wikipedia
    one (0.046), which the row's own printed ±10% covers."""
    hr = _script(Path("benchmarks/recipe/history_rule.py"))
    ln10 = float(np.log(10.0))
    hist = [{"law": "auto", "data": d, "predicted": 1.0, "actual": float(np.exp(m * i * 1e-3 * ln10)),
             "compute_ratio": 10.0} for d, m in (("synthetic", 1), ("wikipedia", 2)) for i in range(1, 11)]
    hist.append({"law": "schedule", "data": "synthetic", "predicted": 1.0, "actual": 2.0, "compute_ratio": 10.0})
    (tmp_path / "h.json").write_text(json.dumps(hist))
    q = hr.quantiles([str(tmp_path / "h.json")], 0.9)
    assert q["synthetic"] == (pytest.approx(0.010), 10) and q["wikipedia"] == (pytest.approx(0.020), 10)

    def row(data, e):
        return {"law": "auto", "data": data, "predicted": 3.0, "actual": float(3.0 * np.exp(e)), "compute_ratio": 10.0,
                "ratio": 10.0, "rel_error": float(np.exp(-e) - 1), "upper": 3.0 * 1.1, "lower": 3.0 / 1.1,
                "half_width": (1.1 - 1 / 1.1) / 2, "inside": True, "quantile": 1.0,    # as forecast.py writes a case
                "sigma_parts": {"bootstrap": 0.0, "scatter": 0.0, "extrapolation": float(np.log(1.1)),
                                "between_laws": 0.0}}
    (tmp_path / "s.json").write_text(json.dumps([row("synthetic", 0.015), row("wikipedia", 0.05)]))
    assert hr.main(["--history", str(tmp_path / "h.json"), f"x={tmp_path / 's.json'}"]) == 0
    out = capsys.readouterr().out
    assert "| x | synthetic | 1 |" in out and "| 1/1 | ±" in out
    wiki = next(line for line in out.splitlines() if line.startswith("| x | wikipedia |"))
    assert wiki.split(" | ")[6] == "0/1"              # the history's interval misses the 5% row
    assert wiki.split(" | ")[4] == "1/1"              # the printed ±10% covers it


def test_history_rule_leave_seed_out_drops_the_scored_rows_own_seed(tmp_path, capsys):
    """A history of ten seeds whose log misses are 0.001 s ln 10 (seed s = 1..10), and scored rows of the same
    seeds missing by 0.999 of that: with --leave-seed-out each row's q is the largest score of the nine other
    seeds (0.010, but 0.009 for seed 10), so seed 10's row is the one outside; without it q = 0.010 for all."""
    hr = _script(Path("benchmarks/recipe/history_rule.py"))
    ln10 = float(np.log(10.0))

    def row(s, shrink):
        e = shrink * s * 1e-3 * ln10
        return {"law": "auto", "data": "synthetic", "seed": s, "predicted": 3.0, "actual": float(3.0 * np.exp(e)),
                "compute_ratio": 10.0, "ratio": 10.0, "rel_error": float(np.exp(-e) - 1), "upper": 3.3,
                "lower": 3.0 / 1.1, "half_width": 0.1, "inside": True, "quantile": 1.0,
                "sigma_parts": {"extrapolation": float(np.log(1.1))}}
    (tmp_path / "h.json").write_text(json.dumps([row(s, 1.0) for s in range(1, 11)]))
    (tmp_path / "r.json").write_text(json.dumps([row(s, 0.999) for s in range(1, 11)]))
    assert hr.quantiles([str(tmp_path / "h.json")], 0.9, leave_out=("synthetic", 10)) == {
        "synthetic": (pytest.approx(0.009), 9)}
    for flag, covered in (([], "10/10"), (["--leave-seed-out"], "9/10")):
        assert hr.main(["--history", str(tmp_path / "h.json"), *flag, f"x={tmp_path / 'r.json'}"]) == 0
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| x | synthetic |"))
        assert line.split(" | ")[6] == covered, line


def test_target_noise_retrains_the_matrix_target_from_another_init(tmp_path, capsys):
    """The mini preset's 10x w64 d2 target of seed 3, trained again with run.seed 3 + 7 and the same data seed:
    the printed difference is ln(new / the row's actual), and the run directory's config says so."""
    from train.rundir import read_run

    tn = _script(Path("benchmarks/recipe/target_noise.py"))
    (tmp_path / "c.json").write_text(json.dumps([
        {"law": "auto", "seed": 3, "shape": "10x w64 d2", "actual": 5.0},
        {"law": "schedule", "seed": 3, "shape": "10x w64 d2", "actual": 9.0}]))     # another method: not read
    assert tn.main(["--cases", str(tmp_path / "c.json"), "--preset", "mini", "--targets", "10:w64d2",
                    "--offset", "7", "--out", str(tmp_path / "out")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| 3 | 10x w64 d2 |"))
    was, now, diff = (c.strip() for c in line.split("|")[3:6])
    assert was == "5.0000" and diff == f"{100 * np.log(float(now) / 5.0):+.2f}%"
    (run_dir,) = (tmp_path / "out" / "seed3").iterdir()
    config, _, summary = read_run(run_dir)
    assert config["run"]["seed"] == 10 and config["data"]["seed"] == 3
    assert float(now) == pytest.approx(summary["final_val_loss"], abs=5e-5)
    with pytest.raises(SystemExit, match="no trained row for target 10x w96 d2"):
        tn.main(["--cases", str(tmp_path / "c.json"), "--preset", "mini", "--targets", "10:w96d2",
                 "--out", str(tmp_path / "out2")])


def test_ship_history_writes_the_preset_method_rows_of_one_corpus(tmp_path):
    """ship_history keeps the rows of the preset's method (mini's law) on the corpus asked for, with what the
    history needs, under the preset's recipe key; a seed and target twice is refused; --check says whether
    the file is what the rows give."""
    from testbed.preset import load_preset, recipe_key

    sh = _script(Path("benchmarks/recipe/ship_history.py"))
    method = load_preset("mini").fit.law
    rows = [{"law": law, "data": data, "seed": 5, "shape": "10x w64 d2", "predicted": 3.0, "actual": 3.1,
             "compute_ratio": 10.0, "sigma": 0.01} for law, data in ((method, "synthetic"), ("schedule", "synthetic"),
                                                                      (method, "wikipedia"))]
    rows.append({**rows[0], "shape": "30x w96 d2", "compute_ratio": 30.0, "actual": None})   # not trained yet
    (tmp_path / "c.json").write_text(json.dumps(rows))
    d = sh.build("mini", "synthetic", [str(tmp_path / "c.json")])
    assert d["recipe"] == recipe_key(load_preset("mini")) and d["method"] == method != "schedule"
    assert d["records"] == [{"seed": 5, "data": "synthetic", "shape": "10x w64 d2", "predicted": 3.0, "actual": 3.1,
                             "compute_ratio": 10.0, "method": method}]
    out = tmp_path / "mini.json"
    assert sh.main([str(tmp_path / "c.json"), "--preset", "mini", "--data", "synthetic", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == d
    assert sh.main([str(tmp_path / "c.json"), "--preset", "mini", "--data", "synthetic", "--out", str(out),
                    "--check"]) == 0
    assert sh.main([str(tmp_path / "c.json"), "--preset", "mini", "--data", "wikipedia", "--out", str(out),
                    "--check"]) == 1
    (tmp_path / "twice.json").write_text(json.dumps([rows[0], rows[0]]))
    with pytest.raises(SystemExit, match="seed 5 target 10x w64 d2 appears twice"):
        sh.build("mini", "synthetic", [str(tmp_path / "twice.json")])


def test_shipped_histories_are_what_their_committed_cases_give():
    """Each history a preset ships is rebuilt from the cases files it names, and its preset's recipe is still
    the one it was made with (a preset changed without a new history would otherwise stop using it)."""
    from testbed.preset import HISTORIES, load_preset, recipe_key

    sh = _script(Path("benchmarks/recipe/ship_history.py"))
    shipped = sorted(HISTORIES.glob("*.json"))
    assert shipped, "no shipped history"
    for path in shipped:
        d = json.loads(path.read_text())
        assert d == sh.build(d["preset"], d["data"], [str(ROOT / "benchmarks/recipe/cases" / f) for f in d["sources"]])
        assert d["recipe"] == recipe_key(load_preset(d["preset"])), (
            f"preset {d['preset']} changed since {path.name} was written: run its matrix again, or keep the old "
            "recipe under another name")
