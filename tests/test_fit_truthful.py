"""Fits that tell the truth by default: intervals always, one N convention, each law on its own rows,
degenerate designs flagged, clear messages for bad input, and the row filters and batch forecasts
users of published tables need."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.fitresult import FitResult
from analysis.fitting import fit
from testbed.cli import main as run_testbed
from tests.fake_runs import chinchilla_loss, write_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return write_sweep(tmp_path_factory.mktemp("truth") / "sweep", sizes=(1e5, 3e5, 1e6, 3e6),
                       token_mults=(5, 20, 80), noise=0.003)


def _json(capsys):
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------------
# intervals by default


def test_fit_bootstraps_by_default_so_predict_gives_an_interval(sweep, tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(sweep), "--out", str(out), "--starts", "1"]) == 0
    result = FitResult.from_json(out)
    assert result.samples is not None and len(result.samples) == 1000
    capsys.readouterr()
    assert run_testbed(["predict", str(out), "--N", "1e7", "--D", "2e8", "--json"]) == 0
    got = _json(capsys)
    assert got["lower"] is not None and got["lower"] < got["loss"] < got["upper"]


def test_predict_without_an_interval_exits_2_saying_why(sweep, tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(sweep), "--out", str(out), "--starts", "1", "--bootstrap", "0"]) == 0
    capsys.readouterr()
    assert run_testbed(["predict", str(out), "--N", "1e7", "--D", "2e8", "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and "no bootstrap samples" in cap.err and "--bootstrap" in cap.err
    assert len(cap.err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------
# one N convention, each law on its own rows


def test_a_sweep_specs_n_params_is_what_fit_backtest_and_report_count(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 3e5, 1e6, 3e6), token_mults=(5, 20, 80), noise=0.003)
    (sweep / "sweep.json").write_text(json.dumps({"name": "s", "spec": {"n_params": "non_embedding"}, "runs": []}))
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(sweep), "--law", "chinchilla", "--out", str(out), "--starts", "1",
                        "--bootstrap", "16"]) == 0
    result = FitResult.from_json(out)
    assert result.convention["N"] == "non_embedding" and "sweep spec" in result.convention["N_source"]
    # the fake runs have non-embedding = 0.8 total: the fitted range is in that count
    assert result.inputs["ranges"]["N"][0] == pytest.approx(0.8e5, rel=1e-6)
    capsys.readouterr()
    assert run_testbed(["backtest", str(sweep), "--bootstrap", "0", "--starts", "1", "--json"]) == 0
    assert _json(capsys)["summary"]["n_convention"] == "non_embedding"
    # the flag still wins over the spec
    assert run_testbed(["fit", str(sweep), "--out", str(out), "--starts", "1", "--bootstrap", "0",
                        "--n-convention", "total"]) == 0
    assert FitResult.from_json(out).convention["N"] == "total"


def test_backtest_scores_do_not_depend_on_the_order_of_laws(sweep, capsys):
    boards = []
    for laws in ("chinchilla,kaplan", "kaplan,chinchilla"):
        assert run_testbed(["backtest", str(sweep), "--laws", laws, "--bootstrap", "0", "--starts", "1",
                            "--json"]) == 0
        boards.append({row["law"]: row for row in _json(capsys)})
    for law in ("chinchilla", "kaplan"):
        for key in ("mean_abs_rel_err", "far_err", "max_abs_rel_err"):
            assert boards[0][law][key] == pytest.approx(boards[1][law][key], rel=1e-12), (law, key)
    assert boards[0]["kaplan"]["n_convention"] == "non_embedding"
    assert boards[0]["chinchilla"]["n_convention"] == "total"


def test_every_command_fits_a_schedule_law_on_every_eval_point(sweep, tmp_path, capsys):
    out = tmp_path / "ks.json"
    assert run_testbed(["fit", str(sweep), "--law", "kaplan-schedule", "--out", str(out), "--starts", "1",
                        "--bootstrap", "0"]) == 0
    result = FitResult.from_json(out)
    assert result.settings["select"] == "all" and result.n_points > result.inputs["n_runs"]
    assert not any("describes whole loss curves" in w for w in result.warnings)
    capsys.readouterr()
    assert run_testbed(["backtest", str(sweep), "--law", "kaplan-schedule", "--bootstrap", "0", "--starts", "1",
                        "--json"]) == 0
    assert _json(capsys)["summary"]["select"] == "all"
    assert run_testbed(["backtest", str(sweep), "--law", "kaplan", "--bootstrap", "0", "--starts", "1",
                        "--json"]) == 0
    assert _json(capsys)["summary"]["select"] == "final"


# ---------------------------------------------------------------------------
# calibration


def test_calibrate_on_a_small_fit_warns_and_falls_back_to_the_bootstrap_band(tmp_path, capsys):
    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 3e5, 1e6, 3e6, 1e7), token_mults=(20,), noise=0.003)
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(sweep), "--law", "chinchilla", "--out", str(out), "--starts", "1",
                        "--bootstrap", "64", "--calibrate"]) == 0
    printed = capsys.readouterr().out
    assert "could not be measured" in printed and out.is_file()
    result = FitResult.from_json(out)
    assert result.extrapolation is None
    assert run_testbed(["predict", str(out), "--C", "1e17", "--json"]) == 0
    assert _json(capsys)["interval"] == "bootstrap"


def test_bootstrap_sets_without_a_finite_optimum_print_no_numpy_warnings(tmp_path, capsys):
    import warnings

    # one tokens-per-parameter ratio: some bootstrap refits put beta at its bound, where the
    # compute-optimal size is infinite; the band counts them, and the user sees only the answer
    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 3e5, 1e6, 3e6, 1e7), token_mults=(20,), noise=0.003)
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(sweep), "--out", str(out), "--starts", "1", "--bootstrap", "64"]) == 0
    assert (FitResult.from_json(out).samples[:, -1] == 0).any()   # the case under test: beta = 0 in some sets
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_testbed(["predict", str(out), "--C", "1e17", "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["interval"] == "bootstrap"
    # stderr holds the fit's own warnings, repeated, and nothing from numpy
    assert cap.err and all(line.startswith("warning from the fit: ") for line in cap.err.splitlines())
    assert "RuntimeWarning" not in cap.err


def test_predict_repeats_the_warnings_of_the_fit_it_forecasts_from(tmp_path, capsys):
    """Five runs for a five-parameter law: the fit says nothing can measure its uncertainty, and so does predict."""
    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 3e5, 1e6, 3e6, 1e7), token_mults=(20,), noise=0.003)
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(sweep), "--out", str(out), "--starts", "1", "--bootstrap", "16"]) == 0
    fit_warnings = FitResult.from_json(out).warnings
    assert any("only 5 rows for 5 free parameters" in w for w in fit_warnings)
    capsys.readouterr()
    assert run_testbed(["predict", str(out), "--N", "1e8", "--D", "2e9"]) == 0
    cap = capsys.readouterr()
    assert cap.err.splitlines() == [f"warning from the fit: {w}" for w in fit_warnings]
    assert "loss at N=1e+08" in cap.out


def test_overtrain_with_calibrate_gives_the_calibrated_interval_at_N_and_D(sweep, tmp_path, capsys):
    out = tmp_path / "ot.json"
    assert run_testbed(["fit", str(sweep), "--law", "overtrain", "--out", str(out), "--starts", "2",
                        "--bootstrap", "32", "--calibrate"]) == 0
    capsys.readouterr()
    assert run_testbed(["predict", str(out), "--N", "3e7", "--D", "6e8", "--json"]) == 0
    got = _json(capsys)
    assert got["interval"] == "calibrated" and got["lower"] < got["loss"] < got["upper"]
    # the distance is C / C_fit with C = 6ND, as the fit's own C was counted for this table
    assert got["extrapolation"] == pytest.approx(6 * 3e7 * 6e8 / FitResult.from_json(out).extrapolation.C_fit)


# ---------------------------------------------------------------------------
# degenerate designs


def _table(N, D, noise=0.003, seed=0):
    rng = np.random.default_rng(seed)
    N, D = np.asarray(N, float), np.asarray(D, float)
    return pd.DataFrame({"N": N, "D": D, "C": 6 * N * D,
                         "loss": chinchilla_loss(N, D) * (1 + noise * rng.standard_normal(N.size))})


def test_duplicated_rows_are_flagged():
    t = _table(np.repeat([1e6, 3e6, 1e7, 3e7], 3), np.repeat([1e6, 3e6, 1e7, 3e7], 3) * np.tile([5, 20, 80], 4))
    doubled = pd.concat([t, t], ignore_index=True)
    warnings = fit(doubled, "chinchilla", n_starts=1).warnings
    assert any("12 of 24 rows repeat another row exactly" in w for w in warnings)
    assert not any("repeat another row" in w for w in fit(t, "chinchilla", n_starts=1).warnings)


def test_as_many_rows_as_parameters_is_flagged_and_never_gives_a_zero_width_interval(tmp_path, capsys):
    csv = tmp_path / "three.csv"
    _table([1e6, 1e7, 1e8], [2e7, 2e8, 2e9]).to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(csv), "--law", "compute", "--out", str(out), "--starts", "1",
                        "--bootstrap", "200"]) == 0
    result = FitResult.from_json(out)
    assert any("only 3 rows for 3 free parameters" in w for w in result.warnings)
    assert any("bootstrap resamples only 3 runs" in w for w in result.warnings)
    capsys.readouterr()
    code = run_testbed(["predict", str(out), "--C", "1e19", "--json"])
    cap = capsys.readouterr()
    if code == 0:   # an interval is allowed only if it has a width
        got = json.loads(cap.out)
        assert got["upper"] - got["lower"] > 1e-6 * got["loss"]
    else:
        assert code == 2 and "no interval" in cap.err


def test_runs_without_noise_never_give_a_zero_width_calibrated_interval(tmp_path, capsys):
    # the law passes through every run: the measured run scatter and growth are zero, and so is the
    # bootstrap spread, so a calibrated interval would be the point itself
    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 3e5, 1e6, 3e6, 1e7), token_mults=(5, 20, 80), noise=0.0)
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(sweep), "--out", str(out), "--starts", "2", "--bootstrap", "32",
                        "--calibrate"]) == 0
    assert FitResult.from_json(out).extrapolation is not None
    capsys.readouterr()
    for where in (["--N", "1e6", "--D", "2e7"], ["--N", "1e9", "--D", "2e10"], ["--C", "1e20"]):
        code = run_testbed(["predict", str(out), *where, "--json"])
        cap = capsys.readouterr()
        if code == 0:   # an interval is allowed only if it has a width
            got = json.loads(cap.out)
            assert got["upper"] - got["lower"] > 1e-6 * got["loss"], (where, got)
        else:
            assert code == 2 and "no interval" in cap.err and cap.out == "", (where, cap)
            assert len(cap.err.strip().splitlines()) == 1


def test_a_ladder_at_one_tokens_per_parameter_is_flagged_by_the_fit_as_by_the_plan():
    """One budget per size (D = 20 N): N and D move together and their exponents cannot be separated."""
    N = [1e6, 2e6, 4e6, 8e6, 1.6e7, 3.2e7, 6.4e7]
    one_ratio = fit(_table(N, [20 * n for n in N]), "chinchilla", n_starts=2)
    assert any("nearly collinear" in w and "corr(log N, log D) = +1.000" in w for w in one_ratio.warnings)
    crossed = fit(_table(N * 3, [r * n for r in (5, 20, 80) for n in N]), "chinchilla", n_starts=2)
    assert not any("collinear" in w for w in crossed.warnings)


def test_as_many_runs_as_parameters_is_flagged():
    t = _table([1e6, 3e6, 1e7, 3e7, 1e8], [2e7, 1e8, 2e8, 1e9, 2e9])
    warnings = fit(t, "chinchilla", n_starts=2, bootstrap=50).warnings
    assert any("only 5 rows for 5 free parameters" in w for w in warnings)


def test_a_bootstrap_over_few_runs_is_flagged():
    t = _table([1e6, 3e6, 1e7, 3e7], [2e7, 6e7, 2e8, 6e8])
    warnings = fit(t, "compute", n_starts=1, bootstrap=50).warnings
    assert any("bootstrap resamples only 4 runs" in w for w in warnings)
    assert not any("fewer than 3 distinct" in w for w in warnings)   # 4 budgets: only the bootstrap is flagged


# ---------------------------------------------------------------------------
# messages


# 12 runs of the fake Chinchilla law, 0.2% noise (numpy seed 13). On some numpy/scipy releases
# L-BFGS-B stops on this fit with scipy's "ABNORMAL: " (its line search found no lower point), on
# others it converges, so the tests below make the optimizer's stop themselves: the real L-BFGS-B
# runs, and its result is reported as that stop.
ABNORMAL_LOG_C = [26.427, 27.813, 29.2, 28.695, 30.081, 31.467, 30.962, 32.348, 33.735, 33.229, 34.616, 36.002]
ABNORMAL_LOSS = [3.583829528152823, 3.1432681219593697, 2.8914930847297904, 3.073354918104816, 2.783187077692933,
                 2.57635862641704, 2.725341344237154, 2.4993159487183663, 2.350038479274149, 2.4614357341100455,
                 2.303130976464766, 2.1927849555825887]


def _stopping_lbfgs(monkeypatch, maxiter=None):
    """Every L-BFGS-B call of the fit ends as an ABNORMAL stop: where the real optimizer got to, or, with
    `maxiter`, where it got to after that many iterations (short of the optimum)."""
    import analysis.fitting as fitting
    real = fitting.minimize

    def stopped(*args, **kwargs):
        if maxiter is not None:
            kwargs["options"] = {**kwargs.get("options", {}), "maxiter": maxiter}
        res = real(*args, **kwargs)
        res.success, res.message = False, "ABNORMAL: "
        return res
    monkeypatch.setattr(fitting, "minimize", stopped)


def _abnormal_table() -> pd.DataFrame:
    N = np.repeat(np.geomspace(1e5, 3e6, 4), 3)
    D = N * np.tile([5, 20, 80], 4)
    t = pd.DataFrame({"N": N, "D": D, "C": 6 * N * D, "loss": ABNORMAL_LOSS})
    assert np.allclose(np.log(t["C"]), ABNORMAL_LOG_C, atol=1e-3)
    return t


def test_an_optimizer_stop_at_the_optimum_is_explained_not_flagged(monkeypatch):
    t = _abnormal_table()
    plain = fit(t, "compute", n_starts=8)
    _stopping_lbfgs(monkeypatch)
    r = fit(t, "compute", n_starts=8)
    assert r.converged and "at the optimum up to rounding" in r.message and "ABNORMAL" in r.message
    assert not any("did not converge" in w for w in r.warnings)
    assert not r.message.rstrip().endswith(":")
    assert r.params == pytest.approx(plain.params, rel=1e-6)   # the same fit as one that converged


def test_an_optimizer_stop_short_of_the_optimum_is_flagged(monkeypatch):
    _stopping_lbfgs(monkeypatch, maxiter=1)
    r = fit(_abnormal_table(), "compute", n_starts=1)
    assert not r.converged
    assert any("did not converge" in w and "restart still lowered the objective" in w for w in r.warnings)


def test_a_planned_run_shorter_than_the_fitted_ones_is_refused_not_printed_as_null(sweep, tmp_path, capsys):
    from train.config import RunConfig

    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(sweep), "--out", str(out), "--starts", "1", "--bootstrap", "16"]) == 0
    cfg = tmp_path / "short.json"
    cfg.write_text(json.dumps(RunConfig().to_dict()))
    capsys.readouterr()
    assert run_testbed(["predict", str(out), "--run", str(cfg), "train.tokens=8192", "train.batch_tokens=4096"]) == 2
    err = capsys.readouterr().err.strip()
    assert "before the fewest" in err and len(err.splitlines()) == 1


def test_predict_prints_what_it_was_asked(sweep, tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(sweep), "--out", str(out), "--starts", "1", "--bootstrap", "32"]) == 0
    capsys.readouterr()
    assert run_testbed(["predict", str(out), "--N", "1e9", "--D", "2e10"]) == 0
    printed = capsys.readouterr().out
    assert "loss at N=1e+09, D=2e+10 = " in printed and "loss at  =" not in printed
    assert run_testbed(["predict", str(out), "--C", "1e20"]) == 0
    assert "loss at C=1e+20, N=" in capsys.readouterr().out


@pytest.mark.parametrize("case, flag_or_file", [
    ("truncated", "fit.json"),
    ("nan_param", "fit.json"),
    ("format_9", "fit.json"),
    ("older_law_version", "fit.json"),
    ("not_an_object", "fit.json"),
    ("negative_C", "--C"),
    ("bad_targets_csv", "targets.csv"),
    ("targets_columns", "targets.csv"),
    ("targets_value", "targets.csv"),
])
def test_malformed_predict_inputs_exit_2_with_one_line_naming_them(case, flag_or_file, sweep, tmp_path, capsys):
    good = tmp_path / "good.json"
    assert run_testbed(["fit", str(sweep), "--out", str(good), "--starts", "1", "--bootstrap", "16"]) == 0
    text = good.read_text()
    path = tmp_path / "fit.json"
    d = json.loads(text)
    argv = ["predict", str(path), "--N", "1e7", "--D", "2e8"]
    targets = tmp_path / "targets.csv"
    if case == "truncated":
        path.write_text(text[: len(text) // 2])
    elif case == "nan_param":
        d["params"]["alpha"] = float("nan")
        path.write_text(json.dumps(d))
    elif case == "format_9":
        d["format_version"] = 9
        path.write_text(json.dumps(d))
    elif case == "older_law_version":    # a law whose parameters changed (kaplan-schedule v1 -> v2)
        d["law_version"] = "0"
        path.write_text(json.dumps(d))
    elif case == "not_an_object":
        path.write_text("[1, 2]")
    else:
        path.write_text(text)
        if case == "negative_C":
            argv = ["predict", str(path), "--C", "-1e20"]
        else:
            targets.write_bytes(b"N,D\n1e7,\"2e8\n\x00\x00" if case == "bad_targets_csv" else
                                b"params,tokens\n1e7,2e8\n" if case == "targets_columns" else b"N,D\n1e7,2e8\n-5,1e9\n")
            argv = ["predict", str(path), "--targets", str(targets)]
    capsys.readouterr()
    assert run_testbed(argv) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert len(err.splitlines()) == 1 and flag_or_file in err, err
    assert cap.out == ""


@pytest.mark.parametrize("argv, flag", [
    (["fit", "--starts", "0"], "--starts"),
    (["fit", "--bootstrap", "-1"], "--bootstrap"),
    (["fit", "--level", "2"], "--level"),
    (["fit", "--delta", "0"], "--delta"),
    (["backtest", "--holdout-frac", "2"], "--holdout-frac"),
    (["backtest", "--starts", "0", "--bootstrap", "0"], "--starts"),
])
def test_a_bad_flag_value_is_named_by_its_flag(argv, flag, sweep, tmp_path, capsys):
    assert run_testbed([argv[0], str(sweep), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"error: {flag} must" in err, err


@pytest.mark.parametrize("command", ["fit", "backtest", "report"])
def test_runs_all_left_out_point_at_the_flags_that_keep_them(command, tmp_path, capsys):
    from tests.fake_runs import write_run

    for i, n in enumerate((1e5, 3e5, 1e6)):
        write_run(tmp_path / "sweep", f"r{i}", n_params=n, tokens=40960, status="diverged")
    assert run_testbed([command, str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--include-failed" in err and "--include-partial" in err, err
    assert not (tmp_path / "sweep" / "report.md").exists()


# ---------------------------------------------------------------------------
# row filters, groups and batch forecasts


def test_skip_first_drops_the_start_of_every_curve_and_keeps_its_end(sweep):
    from analysis.load import filter_rows, load

    table = load(sweep)
    kept = filter_rows(table, skip_first=0.5)
    for run, rows in table.groupby("run"):
        d_end = rows["D"].max()
        got = kept[kept["run"] == run]["D"]
        assert got.max() == d_end and (got >= 0.5 * d_end).all()
        assert set(got) == set(rows["D"][rows["D"] >= 0.5 * d_end])
    with pytest.raises(ValueError, match="--skip-first must be in \\[0, 1\\)"):
        filter_rows(table, skip_first=1.0)


def test_where_and_by_fit_one_family_at_a_time(tmp_path, capsys):
    a = _table(np.repeat([1e6, 3e6, 1e7, 3e7], 3), np.repeat([1e6, 3e6, 1e7, 3e7], 3) * np.tile([5, 20, 80], 4))
    b = a.assign(loss=a["loss"] * 1.1)
    csv = tmp_path / "two.csv"
    pd.concat([a.assign(dataset="c4"), b.assign(dataset="pile")]).to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(csv), "--out", str(out), "--starts", "2", "--bootstrap", "0",
                        "--where", "dataset=c4"]) == 0
    only_c4 = FitResult.from_json(out)
    assert only_c4.n_points == 12
    assert run_testbed(["fit", str(csv), "--out", str(out), "--starts", "2", "--bootstrap", "0", "--by", "dataset"]) == 0
    c4, pile = FitResult.from_json(tmp_path / "fit.c4.json"), FitResult.from_json(tmp_path / "fit.pile.json")
    assert c4.params == only_c4.params and c4.n_points == pile.n_points == 12
    assert float(pile.predict(N=1e8, D=2e9)[0]) > float(c4.predict(N=1e8, D=2e9)[0])
    capsys.readouterr()
    for bad, msg in ((["--where", "dataset"], "--where 'dataset' must look like key=value"),
                     (["--where", "model=x"], "no column 'model'"), (["--by", "model"], "--by 'model'")):
        assert run_testbed(["fit", str(csv), "--out", str(tmp_path / "never.json"), *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1
    assert not (tmp_path / "never.json").exists()


def test_by_writes_no_fit_when_one_group_cannot_be_fitted_and_names_that_group(tmp_path, capsys):
    good = _table(np.repeat([1e6, 3e6, 1e7, 3e7], 3), np.repeat([1e6, 3e6, 1e7, 3e7], 3) * np.tile([5, 20, 80], 4))
    single_size = _table(np.full(4, 1e6), 1e6 * np.array([5, 10, 20, 40]))
    csv = tmp_path / "two.csv"
    pd.concat([good.assign(dataset="a"), single_size.assign(dataset="b")]).to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(csv), "--out", str(out), "--starts", "1", "--bootstrap", "0",
                        "--by", "dataset"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--by dataset=b" in err, err
    assert list(tmp_path.glob("fit*.json")) == []   # not even the group that fitted


def test_predict_many_targets_from_a_csv_in_one_call(sweep, tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(sweep), "--out", str(out), "--starts", "1", "--bootstrap", "32"]) == 0
    targets = tmp_path / "targets.csv"
    pd.DataFrame({"name": ["a", "b", "c"], "N": [1e7, 3e7, 1e8], "D": [2e8, 6e8, 2e9]}).to_csv(targets, index=False)
    preds = tmp_path / "preds.csv"
    capsys.readouterr()
    assert run_testbed(["predict", str(out), "--targets", str(targets), "--out", str(preds)]) == 0
    assert "wrote 3 predictions" in capsys.readouterr().out
    got = pd.read_csv(preds)
    assert list(got["name"]) == ["a", "b", "c"] and set(got["interval"]) == {"bootstrap"}
    for row in got.itertuples():
        assert run_testbed(["predict", str(out), "--N", repr(row.N), "--D", repr(row.D), "--json"]) == 0
        one = _json(capsys)
        assert row.loss == pytest.approx(one["loss"], rel=1e-12)
        assert (row.lower, row.upper) == pytest.approx((one["lower"], one["upper"]), rel=1e-12)
    assert math.isfinite(got["loss"].sum())
