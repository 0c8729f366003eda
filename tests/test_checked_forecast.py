"""A checked forecast's numbers (analysis.checked): actual loss, error, inside, whole-curve ARE and the report's
table, each against a value computed here by hand from a target run written with known losses."""
from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.checked import check, forecast_record, write_report
from analysis.fitting import fit
from analysis.load import load_runs
from tests.fake_runs import write_sweep
from train.config import RunConfig


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """A forecast of a planned run from a fake ladder, and that run written with losses 1%, 2%, ... above it."""
    root = tmp_path_factory.mktemp("checked")
    table = load_runs(write_sweep(root / "ladder", sizes=(1e5, 3e5, 1e6, 3e6), token_mults=(5, 20, 80), noise=0.003))
    result = fit(table, "chinchilla", bootstrap=40, n_starts=1, seed=0)
    target = RunConfig().with_overrides({"model.width": 128, "model.depth": 4, "model.context": 64,
                                         "train.batch_tokens": 4096, "train.tokens": 4096 * 2000,
                                         "eval.points": 10, "run.name": "target"}).resolved()
    record = forecast_record(result, table, target, level=0.9)
    run = root / "target"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(target.to_dict()))
    curve = record["curve"]
    shown = [i for i, p in enumerate(curve["predicted"]) if p is not None]
    assert len(shown) >= 4
    missing = shown[1]                         # one eval point the run never logged (a torn line, say)
    actual = {}
    for j, i in enumerate(shown):
        actual[i] = curve["predicted"][i] * (1 + 0.01 * (j + 1))
    for i, p in enumerate(curve["predicted"]):
        if p is None:
            actual[i] = 9.0                    # before the law's range: no forecast to score
    rows = [{"kind": "eval", "step": s, "tokens": t, "flops": 1.0, "lr": 1e-3, "time_s": 1.0, "val_loss": actual[i]}
            for i, (s, t) in enumerate(zip(curve["steps"], curve["tokens"])) if i != missing]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    final = actual[len(curve["steps"]) - 1]
    (run / "summary.json").write_text(json.dumps({"status": "completed", "final_val_loss": final,
                                                  "wall_time_s": 12.0, "tokens_per_s": 1e5}))
    return root, table, result, record, check(record, run), actual, missing


def test_check_fills_in_the_actual_loss_error_and_inside_by_hand(checked):
    """Mutation checked_are_relative_to_prediction, checked_are_last_point_only: error, inside and the whole-curve
    ARE (mean over the scored eval points of |predicted - actual| / actual) against values computed here."""
    _, _, _, record, out, actual, missing = checked
    n = len(record["curve"]["steps"])
    last = actual[n - 1]
    assert out["actual"] == last
    assert out["abs_rel_error"] == pytest.approx(abs(record["predicted"] - last) / last, rel=1e-12)
    assert out["inside_interval"] == (record["lower"] <= last <= record["upper"])
    assert out["curve"]["actual"] == [None if i == missing else actual[i] for i in range(n)]
    shown = [i for i, p in enumerate(record["curve"]["predicted"]) if p is not None]
    # the j-th scored point is 1 + 0.01 (j + 1) times its forecast: |p - a| / a = d / (1 + d)
    d = [0.01 * (j + 1) for j, i in enumerate(shown) if i != missing]
    assert out["curve"]["are"] == pytest.approx(np.mean([x / (1 + x) for x in d]), rel=1e-9)
    assert out["target"]["wall_time_s"] == 12.0
    assert record["actual"] is None and record["curve"]["actual"] is None     # the forecast itself is untouched


def test_check_refuses_a_target_that_did_not_complete(checked, tmp_path):
    root, *_ = checked
    run = tmp_path / "t"
    run.mkdir()
    for f in ("config.json", "metrics.jsonl"):
        (run / f).write_bytes((root / "target" / f).read_bytes())
    (run / "summary.json").write_text(json.dumps({"status": "diverged", "final_val_loss": float("nan")}))
    with pytest.raises(RuntimeError, match="did not complete .status diverged"):
        check(checked[3], run)


def test_the_report_table_shows_the_checked_numbers(checked, tmp_path):
    """Mutation checked_report_error_number: report.md's table row is the record's prediction, interval, actual,
    relative error in percent and inside, formatted as written here."""
    _, table, result, _, out, _, _ = checked
    text = write_report(tmp_path, table, result, out).read_text()
    fmt = lambda v: f"{v:.4g}"  # noqa: E731
    row = (f"| chinchilla | {fmt(out['predicted'])} | [{fmt(out['lower'])}, {fmt(out['upper'])}] | "
           f"{fmt(out['actual'])} | {100 * out['abs_rel_error']:.2f}% | {'yes' if out['inside_interval'] else 'no'} |")
    assert row in text.splitlines(), text
    assert f"Target: N = {out['target']['N']:,.0f}, D = {out['target']['D']:,.0f}" in text
    assert f"({out['compute_ratio']:.1f}x the largest ladder run)" in text


def test_a_target_that_repeats_a_small_corpus_more_than_the_ladder_did_is_named(tmp_path):
    """Two real runs on a small byte-level corpus, each reading under half of it: a target planned to read
    it three times is named for it (a law in N and D assumes fresh tokens); a target within one pass is not,
    and a target on other data is named for its data only."""
    from analysis.checked import outside_ladder
    from train.api import train_run
    from train.config import load_config

    words = "the quick brown fox jumps over a lazy dog while seven wizards hex bright jugglers".split()
    rng = np.random.default_rng(0)
    src = tmp_path / "corpus.txt"
    src.write_text("\n\n".join(" ".join(rng.choice(words, size=40)) for _ in range(150)) + "\n")

    def cfg(*extra):
        return load_config(None, ["model.width=16", "model.depth=1", "model.head_dim=8", "model.context=16",
                                  "data.tokenizer=byte",
                                  f"data.source={src}", "data.val_frac=0.1", f"data.cache_dir={tmp_path / 'cache'}",
                                  "data.num_proc=1", "train.batch_tokens=256", "eval.tokens=256", "eval.points=2",
                                  "train.threads=1", "train.device=cpu", *extra])

    for width, tokens in ((16, 4096), (24, 8192)):
        train_run(cfg(f"model.width={width}", f"train.tokens={tokens}"), tmp_path / "ladder" / f"w{width}")
    corpus = json.loads((tmp_path / "ladder" / "w16" / "summary.json").read_text())["data"]["train_tokens"]
    assert 8192 < corpus / 2                     # the ladder reads at most half the corpus
    table = load_runs(tmp_path / "ladder")

    three = outside_ladder(table, cfg("model.width=32", f"train.tokens={3 * corpus}").resolved())
    assert three == [f"epochs: the target reads its {corpus:,} training tokens 3.0 times (ladder: at most "
                     f"{8192 / corpus:.2f}); the law assumes every token is fresh"], three
    assert outside_ladder(table, cfg("model.width=32", f"train.tokens={corpus // 2}").resolved()) == []
    # the same file cut into other tokens is another corpus: its vocabulary is named, no count of passes
    bpe = outside_ladder(table, cfg("data.tokenizer=bpe", "data.vocab_size=300", f"train.tokens={3 * corpus}").resolved())
    assert len(bpe) == 1 and bpe[0].startswith("vocabulary 300 (ladder: 256)"), bpe
    other = tmp_path / "other.txt"
    other.write_text(src.read_text())
    elsewhere = outside_ladder(table, cfg(f"data.source={other}", f"train.tokens={3 * corpus}").resolved())
    assert len(elsewhere) == 1 and elsewhere[0].startswith(f"data {str(other)!r}"), elsewhere


def test_a_calibrated_forecast_records_what_its_interval_is_made_of(checked):
    """The record's sigma_parts (analysis.calibrate.interval_parts): they compose sigma, the interval is
    point * exp(+-quantile * sigma), and each part is what it says: s0, k * ln(distance), no laws apart for
    one law, and the bootstrap spread of the forecast."""
    from analysis.calibrate import with_extrapolation_error
    from analysis.console import sigma_line
    from analysis.predict import forecast

    _, table, result, _, _, _, _ = checked
    cal = with_extrapolation_error(result, table, n_starts=1)
    target = RunConfig().with_overrides({"model.width": 512, "model.depth": 4, "model.context": 64,   # ~14x beyond
                                         "train.batch_tokens": 4096, "train.tokens": 4096 * 200_000,
                                         "eval.points": 10, "run.name": "far"}).resolved()
    rec = forecast_record(cal, table, target, level=0.9)
    it, err = rec["interval"], cal.extrapolation
    parts = it["sigma_parts"]
    assert sorted(parts) == ["between_laws", "bootstrap", "extrapolation", "scatter"]
    assert np.sqrt(sum(v ** 2 for v in parts.values())) == pytest.approx(it["sigma"], rel=1e-12)
    assert it["quantile"] == pytest.approx(err.quantile(0.9), rel=1e-12) and it["quantile"] > 1.6448
    assert np.log(rec["upper"] / rec["predicted"]) == pytest.approx(it["quantile"] * it["sigma"], rel=1e-9)
    assert parts["scatter"] == pytest.approx(err.s0, rel=1e-12)
    distance = forecast(cal, target).run()["extrapolation"]
    assert distance > 1 and parts["extrapolation"] == pytest.approx(err.k * np.log(distance), rel=1e-12)
    assert parts["between_laws"] == 0.0
    assert 0 < parts["bootstrap"] < it["sigma"]
    line = sigma_line(it["sigma"], parts)
    assert line.startswith(f"interval sigma {it['sigma']:.2%}") and "laws apart" not in line
    assert "parameters (bootstrap)" in line
    # chinchilla on this ladder drifts with distance (k > 0): that part leads the line, with its share of sigma^2
    assert err.k > 0 and line.split(": ", 1)[1].startswith(f"extrapolation k*ln(C/C_fit) {parts['extrapolation']:.2%} (")
