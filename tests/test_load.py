"""Loading run directories and published tables into the tidy curve table."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.load import load, load_runs, load_table
from analysis.schedule import schedule_features
from analysis.tables import TIDY_COLUMNS
from train.config import RunConfig
from tests.fake_runs import chinchilla_loss, write_run, write_sweep

CHINCHILLA_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "chinchilla_epoch" / "svg_extracted_data.csv"


def test_sweep_directory_gives_one_row_per_eval_point(tmp_path):
    write_sweep(tmp_path / "sweep", sizes=(1e5, 1e6), token_mults=(5, 20))
    table = load_runs(tmp_path / "sweep")
    assert set(TIDY_COLUMNS) <= set(table.columns)
    for col in ("kind", "width", "depth", "heads", "context", "vocab_size", "lr_peak", "schedule", "warmup_steps",
                "decay_frac", "batch_tokens", "tokens_budget", "seed", "total_steps", "params_total",
                "params_non_embedding", "flops_per_token", "flop_convention", "loss_floor"):
        assert col in table.columns, col
    assert table["run"].nunique() == 4
    one = table[table["run"] == "gpt-n1-m1"].sort_values("step")
    # N from the summary, D = tokens and C = flops of each eval row, loss = val_loss
    assert (one["N"] == 1_000_000).all()
    assert np.allclose(one["D"], one["step"] * 4096)
    assert np.allclose(one["C"], 6e6 * one["D"])
    assert np.allclose(one["loss"], chinchilla_loss(1e6, one["D"]))
    assert one["final"].sum() == 1 and one["final"].iloc[-1]
    assert one["step"].iloc[-1] == one["total_steps"].iloc[0]
    assert (one["heads"] == 2).all() and (one["schedule"] == "constant").all()


def test_n_convention_picks_the_count(tmp_path):
    write_run(tmp_path, "a", n_params=1e6, tokens=40960)
    total = load_runs(tmp_path / "a")
    nonemb = load_runs(tmp_path / "a", n_convention="non_embedding")
    assert total["N"].iloc[0] == 1_000_000 and nonemb["N"].iloc[0] == 800_000
    with pytest.raises(ValueError, match="n_convention"):
        load_runs(tmp_path / "a", n_convention="kaplan")


def test_torn_last_line_is_tolerated(tmp_path):
    d = write_run(tmp_path, "torn", n_params=1e6, tokens=40960)
    intact = load_runs(d)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"kind": "eval", "step": 99, "tok')
    assert load_runs(d).equals(intact)


def test_failed_and_partial_runs_are_left_out_by_default(tmp_path, caplog):
    root = tmp_path / "sweep"
    write_run(root, "ok", n_params=1e6, tokens=40960)
    bad = write_run(root, "bad", n_params=2e6, tokens=40960, status="diverged")
    rows = [json.loads(x) for x in (bad / "metrics.jsonl").read_text().splitlines()]
    rows[-1]["val_loss"] = float("nan")  # a diverged run's last eval
    (bad / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    running = write_run(root, "running", n_params=3e6, tokens=40960, status=None)
    lines = (running / "metrics.jsonl").read_text().splitlines(keepends=True)
    (running / "metrics.jsonl").write_text("".join(lines[:-4]))  # interrupted before its last steps
    with caplog.at_level(logging.WARNING, logger="analysis.load"):
        table = load_runs(root)
    assert set(table["run"]) == {"ok"}
    assert "bad (diverged)" in caplog.text and "running" in caplog.text
    both = load_runs(root, include_failed=True, include_partial=True)
    assert set(both["run"]) == {"ok", "bad", "running"}
    assert np.isfinite(both["loss"]).all()  # the NaN eval of the diverged run is dropped
    # a run without summary has no final point, and its N is counted from the config
    running = both[both["run"] == "running"]
    assert not running["final"].any() and (running["status"] == "running").all()
    assert running["N"].iloc[0] > 0


def test_duplicate_eval_steps_after_resume_keep_the_later_row(tmp_path):
    d = write_run(tmp_path, "resumed", n_params=1e6, tokens=40960)
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    again = dict(evals[2], val_loss=evals[2]["val_loss"] + 0.5)
    with open(d / "metrics.jsonl", "a") as f:
        f.write(json.dumps(again) + "\n")
    table = load_runs(d)
    assert len(table) == len(evals)
    assert table.loc[table["step"] == evals[2]["step"], "loss"].item() == pytest.approx(evals[2]["val_loss"] + 0.5)


def test_empty_directory_says_no_runs_found(tmp_path):
    with pytest.raises(ValueError, match="no runs found under"):
        load_runs(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "nope")


def test_schedule_features_of_a_run_come_from_its_config(tmp_path):
    from train.schedules import lr_curve

    d = write_run(tmp_path, "cos", n_params=1e6, tokens=4096 * 50, schedule="cosine")
    cfg = json.loads((d / "config.json").read_text())
    table = load_runs(d)
    lr = lr_curve(50, cfg["optim"]["lr"], RunConfig.from_dict(cfg).schedule)
    S1, S2 = schedule_features(lr, table["step"].to_numpy(), tokens_per_step=4096)
    np.testing.assert_array_equal(table["S1"], S1)
    np.testing.assert_array_equal(table["S2"], S2)
    assert table["S2"].iloc[-1] > 0 and table["S1"].iloc[-1] < 50 * 4096   # a cosine anneals: S1 < D


def test_a_curve_table_written_to_csv_loads_back_as_the_same_runs(tmp_path):
    """A tidy table of curves (several eval points per run) saved as CSV keeps its runs, steps, lr and finals:
    a bootstrap over runs and the laws of whole curves see the runs, not one run per row."""
    write_sweep(tmp_path / "sweep", sizes=(1e5, 1e6), token_mults=(5, 20))
    table = load_runs(tmp_path / "sweep")
    table.to_csv(tmp_path / "curves.csv", index=False)
    back = load(tmp_path / "curves.csv")
    assert len(back) == len(table) and back["run"].nunique() == 4
    for col in ("run", "step", "final"):
        assert list(back[col]) == list(table[col]), col
    np.testing.assert_allclose(back["lr"], table["lr"])
    np.testing.assert_allclose(back[["N", "D", "C", "loss"]], table[["N", "D", "C", "loss"]])


def test_table_mapping_derives_D_from_C(tmp_path):
    csv = tmp_path / "pts.csv"
    pd.DataFrame({"Model Size": [1e6, 2e6], "Training FLOP": [6e12, 2.4e13], "loss": [3.0, 2.8],
                  "note": ["a", "b"]}).to_csv(csv, index=False)
    table = load(csv, columns='N="Model Size",C="Training FLOP",loss=loss')
    assert np.allclose(table["D"], [1e6, 2e6])
    assert table["run"].nunique() == 2 and table["final"].all()
    assert list(table["note"]) == ["a", "b"]
    # C from N and D when C is absent (aliases found without a mapping)
    csv2 = tmp_path / "nd.csv"
    pd.DataFrame({"params": [1e6], "tokens": [2e7], "loss": [3.0]}).to_csv(csv2, index=False)
    assert load_table(csv2)["C"].item() == pytest.approx(6 * 1e6 * 2e7)


def test_table_parquet(tmp_path):
    pq = tmp_path / "pts.parquet"
    pd.DataFrame({"N": [1e6, 2e6], "D": [1e7, 2e7], "loss": [3.0, 2.8]}).to_parquet(pq)
    assert len(load(pq)) == 2


@pytest.mark.parametrize("frame, columns, message", [
    ({"Model Size": [1e6], "loss": [3.0]}, "N=Model Size,C=Training Flops,loss=loss",
     r"\['Training Flops'\] not found; the table has \['Model Size', 'loss'\]"),
    ({"N": [1e6, 2e6], "C": [1e13, 2e13], "L": [3.0, 2.9]}, None, "no loss column"),
    ({"N": [1e6, 2e6], "L": [3.0, 2.9]}, "loss=L", "need two of N, D, C but found"),
    ({"N": [1e6, np.nan, 3e6], "D": [1e7, 1e7, 1e7], "loss": [3.0, 2.9, np.inf]}, None,
     "column 'N' has 1 NaN/inf"),
    ({"N": [1e6, 2e6], "D": [1e7, 1e7], "loss": [3.0, -1.0]}, None, "column 'loss' has 1 zero or negative"),
    ({"N": [1e6], "D": [1e7], "loss": [3.0]}, "M=N", "unknown tidy column"),
])
def test_bad_tables_name_the_problem(tmp_path, frame, columns, message):
    csv = tmp_path / "bad.csv"
    pd.DataFrame(frame).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=message):
        load(csv, columns=columns)


def test_bad_file_and_suffix(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="expected a run or sweep directory"):
        load(tmp_path / "x.txt")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="cannot read table"):
        load(tmp_path / "empty.csv")


@pytest.mark.skipif(not CHINCHILLA_CSV.exists(), reason="shared Chinchilla data absent")
def test_published_chinchilla_table_loads():
    table = load(CHINCHILLA_CSV, columns='N="Model Size",C="Training FLOP",loss=loss')
    assert len(table) == 245 and table["run"].nunique() == 245
    assert np.allclose(table["C"], 6 * table["N"] * table["D"])
    assert table["N"].min() > 4e7 and table["N"].max() < 2e10
    assert 1.9 < table["loss"].min() < table["loss"].max() < 6
