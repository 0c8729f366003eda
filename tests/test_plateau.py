"""The early plateau: its estimator, and the warnings of `sweep plan` and of the fit."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.fitting import fit
from analysis.plateau import PLATEAU_STEPS, fitted_on_plateau, plateau_end, short_runs, unigram_loss
from sweeps.expand import expand
from sweeps.plan import diagnostics
from sweeps.spec import spec_from_dict


def test_unigram_loss_is_the_smoothed_train_frequencies_scored_on_val():
    train = np.array([0, 0, 0, 1])            # counts 3, 1, 0 (+0.5 each): p = 3.5/5.5, 1.5/5.5, 0.5/5.5
    val = np.array([0, 2])
    want = -(math.log(3.5 / 5.5) + math.log(0.5 / 5.5)) / 2
    assert unigram_loss(train, val, vocab_size=3) == pytest.approx(want)
    with pytest.raises(ValueError, match="token ids"):
        unigram_loss(train, np.array([3]), vocab_size=3)


def test_plateau_end_is_the_first_eval_clearly_below_the_unigram_loss():
    steps = [1, 10, 30, 60, 90, 120, 200]
    loss = [6.9, 6.55, 6.52, 6.47, 6.42, 6.2, 5.5]   # sits at ~6.5, then drops
    assert plateau_end(steps, loss, unigram=6.50) == 120   # 6.42 is not 0.1 below
    assert plateau_end(steps, loss, unigram=6.50, margin=0.05) == 90
    assert plateau_end(steps[:5], loss[:5], unigram=6.50) is None


def _spec(tokens: list[int], batch_tokens: int = 512):
    return spec_from_dict({
        "name": "p", "family": "grid",
        "base": {"model": {"context": 64, "head_dim": 8}, "data": {"vocab_size": 64},
                 "train": {"batch_tokens": batch_tokens}, "eval": {"tokens": 1024, "points": 4}},
        "axes": {"model.width": [16, 32, 48], "train.tokens": tokens}})


def test_sweep_plan_names_the_runs_that_end_on_the_plateau():
    runs = expand(_spec([102_400, 204_800, 409_600]))    # 200, 400 and 800 steps
    warn = [d for d in diagnostics(runs, "grid") if "plateau" in d]
    assert len(warn) == 1
    short = [r.run_id for r in runs if r.tokens == 102_400]
    assert warn[0].startswith("3 of 9 runs train fewer than 300 optimizer steps")
    assert all(r in warn[0] for r in short) and "(200 steps)" in warn[0]
    # a plateau measured at 50 steps for this setup: 200 steps clear it
    assert not [d for d in diagnostics(runs, "grid", plateau_steps=50) if "plateau" in d]
    # long enough runs: quiet
    runs = expand(_spec([204_800, 409_600, 819_200]))
    assert not [d for d in diagnostics(runs, "grid") if "plateau" in d]


def test_every_run_on_the_plateau_is_said_so():
    msg = short_runs({"a": 40, "b": 90}, PLATEAU_STEPS)
    assert msg.startswith("every run trains fewer than 300")
    with pytest.raises(ValueError, match="plateau_steps"):
        short_runs({"a": 40}, 0)


def test_sweep_plan_cli_takes_a_measured_plateau(tmp_path, capsys):
    from sweeps.cli import main
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({
        "name": "p", "family": "grid",
        "base": {"model": {"context": 64, "head_dim": 8}, "data": {"vocab_size": 64},
                 "train": {"batch_tokens": 512}, "eval": {"tokens": 1024, "points": 4}},
        "axes": {"model.width": [16, 32, 48], "train.tokens": [102_400, 204_800, 409_600]}}))
    assert main(["plan", str(spec), "--json", "--throughput", "none"]) == 0
    assert any("plateau" in d for d in json.loads(capsys.readouterr().out)["diagnostics"])
    assert main(["plan", str(spec), "--json", "--throughput", "none", "--plateau-steps", "50"]) == 0
    assert not any("plateau" in d for d in json.loads(capsys.readouterr().out)["diagnostics"])


def _kaplan_table(first_step: int) -> pd.DataFrame:
    """Final points of a 4 x 3 ladder drawn from a Kaplan law, at batch 512."""
    rows = []
    for n in (6e3, 1.2e4, 2.5e4, 5e4):
        for steps in (first_step, 2 * first_step, 4 * first_step):
            d = 512.0 * steps
            loss = ((8.8e6 / n) ** (0.076 / 0.095) + 5.4e6 / d) ** 0.095
            rows.append({"run": f"n{n:g}-s{steps}", "N": n, "D": d, "C": 6 * n * d, "step": steps, "loss": loss})
    return pd.DataFrame(rows)


def test_the_fit_warns_when_its_points_sit_near_the_plateau():
    near = fit(_kaplan_table(100), "kaplan", n_starts=4)
    warn = [w for w in near.warnings if "plateau" in w]
    assert len(warn) == 1 and warn[0].startswith("8 of 12 fitted points (8 runs) are within 300 optimizer steps")
    clear = fit(_kaplan_table(400), "kaplan", n_starts=4)
    assert not [w for w in clear.warnings if "plateau" in w]
    assert fitted_on_plateau([10, 20], ["a", "b"]).startswith("every fitted point")
    assert fitted_on_plateau([0, 0], ["a", "b"]) is None   # steps not known (published tables)
    # a plateau measured at 25 steps for these runs: 100 steps are clear of it
    measured = fit(_kaplan_table(100), "kaplan", n_starts=4, plateau_steps=25)
    assert not [w for w in measured.warnings if "plateau" in w]
    with pytest.raises(ValueError, match="plateau_steps"):
        fit(_kaplan_table(100), "kaplan", plateau_steps=0)


def test_fit_cli_takes_a_measured_plateau(tmp_path, capsys):
    from analysis.cli import fit_main
    csv = tmp_path / "t.csv"
    _kaplan_table(100).to_csv(csv, index=False)
    # a published table without steps is not judged
    published = tmp_path / "published.csv"
    _kaplan_table(100).drop(columns=["run", "step"]).to_csv(published, index=False)
    assert fit_main([str(published), "--law", "kaplan", "--out", str(tmp_path / "p.json"), "--bootstrap", "0",
                     "--columns", "N=N,D=D,loss=loss"]) == 0
    assert "early plateau" not in capsys.readouterr().out
    csv_args = ["--columns", "run=run,step=step,N=N,D=D,loss=loss"]
    assert fit_main([str(csv), "--law", "kaplan", "--out", str(tmp_path / "a.json"), "--bootstrap", "0",
                     *csv_args]) == 0
    assert "early plateau" in capsys.readouterr().out
    assert fit_main([str(csv), "--law", "kaplan", "--out", str(tmp_path / "b.json"), "--bootstrap", "0",
                     "--plateau-steps", "25", *csv_args]) == 0
    assert "early plateau" not in capsys.readouterr().out
    assert fit_main([str(csv), "--law", "kaplan", "--bootstrap", "0", "--plateau-steps", "0", *csv_args]) == 2
    assert "--plateau-steps" in capsys.readouterr().err
