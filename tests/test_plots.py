"""Every figure the report writes, rendered and read back as a reader would: no overlapping tick
labels (matplotlib text bounding boxes), no text outside the figure, a legend, units on the loss axis."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis import plots
from analysis.backtest import backtest
from analysis.fitting import fit
from analysis.load import load
from tests.fake_runs import chinchilla_loss, write_sweep


@pytest.fixture
def saved(monkeypatch):
    """Every Figure saved while the test runs."""
    figures = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def _tick_labels(axis, renderer):
    lo, hi = sorted(axis.get_view_interval())
    out = []
    for tick in list(axis.get_major_ticks()) + list(axis.get_minor_ticks()):
        label = tick.label1
        if tick.get_loc() is None or not (lo <= tick.get_loc() <= hi) or not label.get_visible():
            continue
        if label.get_text().strip():
            out.append((label.get_text(), label.get_window_extent(renderer)))
    return out


def problems(fig: Figure) -> list[str]:
    """What a reader would flag: overlapping tick labels, text cut off by the figure's edge."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            for (a, box_a), (b, box_b) in itertools.combinations(_tick_labels(axis, renderer), 2):
                if box_a.overlaps(box_b):
                    found.append(f"{name} tick labels {a!r} and {b!r} overlap")
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label]
        for text in texts:
            if text.get_text():
                box = text.get_window_extent(renderer)
                if box.x0 < -1 or box.y0 < -1 or box.x1 > fig.bbox.x1 + 1 or box.y1 > fig.bbox.y1 + 1:
                    found.append(f"{text.get_text()!r} is cut off by the figure's edge")
    return found


def _check(figures, n_expected):
    assert len(figures) == n_expected
    for fig in figures:
        assert not problems(fig), problems(fig)
        main = fig.axes[0]
        assert main.get_legend() is not None, main.get_title()


@pytest.fixture(scope="module")
def narrow_sweep(tmp_path_factory):
    # sizes within one decade and losses within a factor 1.5: the ranges where matplotlib's default
    # log labels crowd ("2x10^5 3x10^5 ...") or read "4.4x10^0"
    return write_sweep(tmp_path_factory.mktemp("plots") / "sweep", sizes=(2e5, 3e5, 4e5, 6e5),
                       token_mults=(5, 20, 80), noise=0.003)


def test_curves_and_isoflop_figures_read_cleanly(narrow_sweep, tmp_path, saved):
    table = load(narrow_sweep)
    plots.plot_curves(table, tmp_path / "c.png")
    plots.plot_isoflop(table, tmp_path / "i.png")
    _check(saved, 2)
    assert "nats/token" in saved[0].axes[0].get_ylabel()


def test_the_isoflop_star_is_drawn_where_the_legend_says(tmp_path, saved):
    # final points of an isoFLOP grid (one row per run, as published): each budget's sizes bracket
    # the optimum, so each parabola's minimum is a star
    rows = []
    for c in (1e18, 1e19, 1e20):
        n_opt = np.sqrt(c / 120)
        for f in (0.2, 0.4, 1.0, 2.5, 5.0):
            n = n_opt * f
            rows.append({"N": n, "D": c / (6 * n), "C": c, "loss": float(chinchilla_loss(n, c / (6 * n)))})
    table = pd.DataFrame(rows).assign(run=[f"r{i}" for i in range(len(rows))], step=0, final=True)
    plots.plot_isoflop(table, tmp_path / "i.png")
    _check(saved, 1)
    ax = saved[0].axes[0]
    stars = [line for line in ax.get_lines() if line.get_marker() == "*" and len(line.get_xdata())]
    assert len(stars) == 3
    assert any("N_opt" in t.get_text() for t in ax.get_legend().get_texts())


@pytest.mark.slow
def test_fit_residual_and_backtest_figures_read_cleanly(narrow_sweep, tmp_path, saved):
    table = load(narrow_sweep)
    for law in ("chinchilla", "compute", "kaplan-schedule"):
        result = fit(table, law, bootstrap=20, n_starts=1)
        plots.plot_fit(table, result, tmp_path / f"f_{law}.png")
        plots.plot_residuals(table, result, tmp_path / f"r_{law}.png")
    plots.plot_backtest(backtest(table, "chinchilla", bootstrap=20, n_starts=1), tmp_path / "b.png")
    _check(saved, 7)
    legend = [t.get_text() for t in saved[-1].axes[0].get_legend().get_texts()]
    assert any("predictive interval" in t for t in legend) and any("parameter interval" in t for t in legend)
    band = [t.get_text() for t in saved[0].axes[0].get_legend().get_texts()]
    assert any("bootstrap band" in t for t in band)


def test_readable_log_axis_picks_round_values_for_narrow_ranges():
    fig = Figure()
    ax = fig.subplots()
    ax.set_xscale("log")
    ax.set_xlim(1.9e5, 6.4e5)
    plots.readable_log_axis(ax.xaxis, 1.9e5, 6.4e5)
    assert [t.get_text() for t in ax.xaxis.get_ticklabels()] == ["200k", "300k", "400k", "500k", "600k"]
    ax.set_xlim(8e4, 3.2e6)
    plots.readable_log_axis(ax.xaxis, 8e4, 3.2e6)        # a decade and a half: 1-2-5 steps
    assert [t.get_text() for t in ax.xaxis.get_ticklabels()] == ["100k", "200k", "500k", "1M", "2M"]
    assert plots.compact_number(1.5e6) == "1.5M" and plots.compact_number(3.2) == "3.2"
    assert plots.compact_number(1.3e22) == "1.3e+22"


def test_the_overlap_check_catches_crowded_default_log_labels_and_readable_ticks_fix_them():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    def narrow_axis():
        fig = Figure(figsize=(3, 3))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.set_xscale("log")
        ax.plot([1.1e5, 9.5e5], [1, 2])
        ax.set_xlim(1.1e5, 9.5e5)
        return fig, ax
    fig, _ = narrow_axis()      # matplotlib's default: 2x10^5, 3x10^5, 4x10^5 ... crowd each other
    assert any("overlap" in p for p in problems(fig))
    fig, ax = narrow_axis()
    plots.readable_log_axis(ax.xaxis, 1.1e5, 9.5e5)
    assert not problems(fig)


def test_benchmark_tables_print_as_markdown_or_rich(capsys):
    """One table printer for the benchmark scripts: the Markdown form is what benchmarks/README.md pastes."""
    from analysis.console import print_table
    head, rows = ["law", "median |err|"], [["kaplan", "0.93%"], ["chinchilla", "4.13%"]]
    print_table(head, rows, "t", markdown=True)
    assert capsys.readouterr().out.splitlines() == [
        "| law | median |err| |", "|---|---|", "| kaplan | 0.93% |", "| chinchilla | 4.13% |"]
    print_table(head, rows, "forecast errors")
    out = capsys.readouterr().out
    assert "forecast errors" in out and "chinchilla" in out and "4.13%" in out and "|---|" not in out
