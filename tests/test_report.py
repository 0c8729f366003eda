"""The Markdown report: sections, tables and the figures it links exist."""
from __future__ import annotations

import re

import pytest

from analysis.report import write_report
from tests.fake_runs import write_sweep


@pytest.mark.slow
def test_report_writes_markdown_and_the_pngs_it_links(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 3e5, 1e6, 3e6), token_mults=(5, 20, 80), noise=0.003)
    out = write_report(sweep, laws=("chinchilla", "compute"), bootstrap=24, n_starts=1)
    assert out == sweep / "report.md"
    text = out.read_text()
    for heading in ("## Runs", "## Curves", "## Law `chinchilla`", "## Law `compute`", "## Backtest", "## Forecast"):
        assert heading in text, heading
    assert "exact loss floor (Bayes-optimal loss on the validation tokens) is 1.5 nats/token" in text
    # every run is listed, parameters come with intervals, the leaderboard names both laws
    for i in range(4):
        for j in range(3):
            assert f"| gpt-n{i}-m{j} |" in text
    assert re.search(r"\| alpha \| [\d.]+ \| \[[\d.]+, [\d.]+\] \|", text)
    board = text.split("## Backtest")[1]
    assert "| chinchilla |" in board and "| compute |" in board
    forecast = text.split("## Forecast")[1]
    row = re.search(r"\| chinchilla \| ([\d.]+) \| \[([\d.]+), ([\d.]+)\] \| \[([\d.]+), ([\d.]+)\] \|", forecast)
    assert row, forecast
    loss, b_lo, b_hi, c_lo, c_hi = map(float, row.groups())
    # the calibrated interval adds run scatter and the backtests' extrapolation error to the bootstrap band
    assert c_lo <= loss <= c_hi
    assert c_hi - c_lo > b_hi - b_lo
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"report_files/curves.png", "report_files/fit_chinchilla.png", "report_files/backtest.png"} <= set(links)
    for link in links:
        png = out.parent / link
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", link


def test_report_refuses_bad_input_before_writing(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 1e6), token_mults=(5,))
    with pytest.raises(ValueError, match="unknown law"):
        write_report(sweep, laws=("chinchilla", "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no runs found under"):
        write_report(tmp_path / "empty")
    assert not (tmp_path / "empty" / "report.md").exists()
    assert not (sweep / "report.md").exists()


@pytest.mark.slow
def test_a_schedule_law_is_fitted_on_whole_curves_and_row_filters_apply(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 3e5, 1e6, 3e6), token_mults=(5, 20, 80), noise=0.003)
    out = write_report(sweep, tmp_path / "r.md", laws=("kaplan", "kaplan-schedule"), bootstrap=16, n_starts=1,
                       min_tokens=100_000)
    text = out.read_text()
    section = text.split("## Law `kaplan-schedule`")[1].split("## ")[0]
    # 12 runs, every eval point from 100k tokens on: more points than runs (a final-loss fit has 12)
    points = int(re.search(r"on (\d+) points", section).group(1))
    assert points > 12
    kaplan = text.split("## Law `kaplan`")[1].split("## ")[0]
    assert "on 12 points" in kaplan
    assert "| kaplan-schedule |" in text.split("## Backtest")[1]
    with pytest.raises(ValueError, match="leave no rows"):
        write_report(sweep, tmp_path / "r2.md", laws=("kaplan",), min_tokens=1e30)


@pytest.mark.slow
def test_report_by_default_fits_the_schedule_laws_and_forecasts_a_given_target(tmp_path, capsys):
    import json

    from testbed.cli import main as run_testbed
    from train.config import RunConfig

    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 3e5, 1e6, 3e6), token_mults=(5, 20, 80), noise=0.003)
    target = tmp_path / "target.json"
    target.write_text(json.dumps(RunConfig().to_dict()))
    assert run_testbed(["report", str(sweep), "--bootstrap", "16", "--starts", "1", "--target", str(target),
                        "model.width=256", "train.tokens=40960000"]) == 0
    text = (sweep / "report.md").read_text()
    for law in ("chinchilla", "kaplan", "compute", "kaplan-schedule", "schedule"):
        assert f"## Law `{law}`" in text, law
    section = text.split("## Target run")[1]
    assert "width 256" in section and "40,960,000 tokens" in section
    for law in ("kaplan-schedule", "chinchilla"):
        row = re.search(rf"\| {law} \| ([\d.]+) \| \[([\d.]+), ([\d.]+)\] \| (calibrated|bootstrap) \|", section)
        assert row, (law, section)
        loss, lo, hi = map(float, row.groups()[:3])
        assert lo < loss < hi
    # a law of the compute budget cannot forecast a run's curve, and says so
    assert "`compute`:" in section
    # each law counts N its own way here, and the runs table shows both counts
    runs = text.split("## Runs")[1].split("## ")[0]
    assert "| N_total | N_non_embedding |" in runs and "kaplan non_embedding" in runs


@pytest.mark.slow
def test_the_runs_table_counts_N_as_declared(tmp_path):
    sweep = write_sweep(tmp_path / "sweep", sizes=(1e5, 3e5, 1e6), token_mults=(5, 20, 80), noise=0.003)
    text = write_report(sweep, laws=("compute",), bootstrap=8, n_starts=1, n_convention="non_embedding").read_text()
    runs = text.split("## Runs")[1].split("## ")[0]
    assert "N counts non_embedding parameters (--n-convention)" in runs
    assert "| N_non_embedding |" in runs and "N_total" not in runs
    assert "| 80000 |" in runs.replace(".0 |", " |") or "| 8e+04 |" in runs
