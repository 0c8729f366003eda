"""The demo on a local text corpus (`testbed demo --data PATH`)."""
from __future__ import annotations

import json

import pytest
import yaml

from testbed import demo
from testbed.preset import PRESETS, load_preset, target_config
from tests.test_data_text import corpus, write_txt


def test_the_text_preset_refuses_to_start_without_a_corpus(tmp_path, capsys):
    out = tmp_path / "out"
    assert demo.main(["--out", str(out), "--scale", "text-cpu", "--quiet"]) == 2
    assert "give it with --data PATH" in capsys.readouterr().err
    assert not out.exists()


def test_data_runs_the_text_preset_on_that_corpus(tmp_path):
    assert demo._default_scale(str(tmp_path / "c.txt")) == "text-cpu"
    corpus_path = str(write_txt(tmp_path / "c.txt", corpus()))
    preset = load_preset("text-cpu").with_data(corpus_path)
    assert not preset.needs_data and load_preset("text-cpu").needs_data
    target = target_config(preset)
    assert target.data.source == corpus_path and target.data.tokenizer == "bpe"
    # the target follows the ladder's LR rule at its own N (muP base LR, a power law of N)
    from models.counting import param_counts
    n = param_counts(target.model)["non_embedding"]
    assert target.optim.lr == pytest.approx(0.0066 * (n / 24736) ** -0.10)


@pytest.mark.slow
def test_a_text_demo_runs_end_to_end_on_a_local_corpus(tmp_path):
    """The mini preset's loop, made a text preset, through `testbed demo --scale FILE --data PATH`."""
    mini = yaml.safe_load((PRESETS / "mini.yaml").read_text())
    mini["name"] = "mini-text"
    mini["needs_data"] = True
    mini["ladder"]["base"]["data"] = {"source": "placeholder", "tokenizer": "bpe", "vocab_size": 300,
                                      "val_frac": 0.1, "cache_dir": str(tmp_path / "cache"), "num_proc": 1}
    mini["ladder"]["base"]["model"]["vocab_pad_multiple"] = 1
    preset_file = tmp_path / "mini-text.yaml"
    preset_file.write_text(yaml.safe_dump(mini))
    corpus_path = write_txt(tmp_path / "c.txt", corpus(n_docs=400))
    out = tmp_path / "out"
    assert demo.main(["--out", str(out), "--scale", str(preset_file), "--data", str(corpus_path), "--quiet"]) == 0
    fc = json.loads((out / demo.FORECAST_FILE).read_text())
    assert fc["actual"] is not None and fc["lower"] <= fc["predicted"] <= fc["upper"]
    cfg = json.loads((out / "target" / "config.json").read_text())
    assert cfg["data"]["source"] == str(corpus_path) and cfg["model"]["vocab_size"] >= 257
    ladder_cfgs = [json.loads(p.read_text()) for p in (out / "ladder").glob("*/config.json")]
    assert ladder_cfgs and all(c["data"]["source"] == str(corpus_path) for c in ladder_cfgs)
