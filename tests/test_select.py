"""Law choice by evidence (analysis.select, `testbed fit --law auto`) on synthetic data whose law is known."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.fitresult import FitResult
from analysis.laws import get_law
from analysis.select import params_at_bound, select_law
from testbed.cli import main as run_testbed
from tests.test_backtest import _overtraining_grid

KAPLAN_TRUTH = {"Nc": 8.8e13, "Dc": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095}


def _kaplan_ladder(seed: int = 0) -> pd.DataFrame:
    """Five sizes x four tokens-per-parameter ratios from Kaplan's law (no irreducible loss), 0.3% noise."""
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(1e6, 1e8, 5), 4)
    D = N * np.tile([5, 20, 80, 320], 5)
    loss = get_law("kaplan").predict(KAPLAN_TRUTH, N=N, D=D) * np.exp(0.003 * rng.standard_normal(N.size))
    return pd.DataFrame({"run": [f"r{i}" for i in range(N.size)], "N": N, "D": D, "C": 6 * N * D, "loss": loss,
                         "step": 1, "final": True})


@pytest.mark.slow
def test_the_law_the_data_follow_is_chosen():
    s = select_law(_kaplan_ladder(), ["chinchilla", "kaplan", "compute"], bootstrap=20, n_starts=2)
    assert s.law == "kaplan" and s.result.law == "kaplan" and s.reasons[-1] == "chosen: kaplan"
    assert s.result.samples is not None and s.result.settings["selection"]["candidates"][0] == "kaplan"
    s = select_law(_overtraining_grid(1), ["chinchilla", "overtrain"], bootstrap=20, n_starts=4)
    assert s.law == "overtrain"


@pytest.mark.slow
def test_a_law_with_a_parameter_at_its_bound_is_passed_over_and_the_reason_given():
    # chinchilla forecasts this Kaplan-law ladder better than the compute frontier does, but with no
    # irreducible loss in the data its E runs to the lower bound of its box
    s = select_law(_kaplan_ladder(), ["chinchilla", "compute"], bootstrap=20, n_starts=2)
    assert list(s.board["law"])[0] == "chinchilla" and s.at_bound["chinchilla"] == ["E"]
    assert s.law == "compute" and not params_at_bound(s.result)
    assert any("chinchilla ranks above compute" in r and "E at a bound" in r for r in s.reasons)


@pytest.mark.slow
def test_fit_law_auto_from_the_command_line(tmp_path, capsys):
    csv = tmp_path / "kaplan.csv"
    _kaplan_ladder().to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    assert run_testbed(["fit", str(csv), "--law", "auto", "--out", str(out), "--bootstrap", "20", "--starts", "2"]) == 0
    printed = capsys.readouterr().out
    assert "selection: chosen: kaplan" in printed and "far_err" in printed
    result = FitResult.from_json(out)
    assert result.law == "kaplan" and "reasons" in result.settings["selection"]


@pytest.mark.parametrize("bad", [["--law", "autox"]])
def test_an_unknown_law_is_still_refused(bad, tmp_path, capsys):
    csv = tmp_path / "kaplan.csv"
    _kaplan_ladder().to_csv(csv, index=False)
    assert run_testbed(["fit", str(csv), *bad, "--out", str(tmp_path / "f.json")]) == 2
    assert "unknown law 'autox'" in capsys.readouterr().err
