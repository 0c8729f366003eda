"""Real-text sources: reading, tokenizers, the shard cache, sampling and bad input."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from train.config import ConfigError, load_config
from train.data import build_data
from train.data.config import DataConfig
from train.data.text import DataError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PRESETS = Path(__file__).resolve().parents[1] / "train" / "presets"

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
         "bright jugglers near lakes and rivers of old stone towns").split()


def corpus(n_docs: int = 120, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        words = rng.choice(WORDS, size=rng.integers(20, 60))
        docs.append(f"Doc {i}: " + " ".join(words) + ". Ünïcode café ✓ — 北京.")
    return docs


def write_txt(path: Path, docs: list[str]) -> Path:
    path.write_text("\n\n".join(docs) + "\n")
    return path


def cfg_for(source: Path | str, tmp_path: Path, **kw) -> DataConfig:
    base = dict(source=str(source), tokenizer="bpe", vocab_size=320, val_frac=0.1, cache_dir=str(tmp_path / "cache"),
                num_proc=1)
    base.update(kw)
    return DataConfig(**base)


def test_bpe_round_trip_and_batches(tmp_path):
    docs = corpus()
    src = build_data(cfg_for(write_txt(tmp_path / "a.txt", docs), tmp_path), 16)
    assert src.vocab_size <= 320 and src.loss_floor(None) is None
    for text in docs[:5] + ["unseen words: zebra Ωmega 🙂\n\tend"]:
        assert src.decode(src.encode(text)) == text
    x = src.train_batch(3, 4)
    assert tuple(x.shape) == (4, 17) and str(x.dtype) == "torch.int64"
    assert int(x.max()) < src.vocab_size
    v = src.val_batch(16 * 5)
    assert tuple(v.shape) == (5, 17)
    # consecutive val windows overlap by exactly the one target/input token
    assert (v[1:, 0] == v[:-1, -1]).all()
    assert src.describe()["train_docs"] + src.describe()["val_docs"] == len(docs)


def test_byte_tokenizer_separates_documents_with_0xff(tmp_path):
    docs = corpus(20)
    src = build_data(cfg_for(write_txt(tmp_path / "a.txt", docs), tmp_path, tokenizer="byte", val_frac=0.2), 8)
    assert src.vocab_size == 256
    ids = np.asarray(src._train)
    n_eos = int((ids == 0xFF).sum())
    assert n_eos == src.describe()["train_docs"]
    text = bytes(ids[ids != 0xFF].tolist()).decode("utf-8")
    assert "café ✓" in text
    assert src.decode(src.encode("北京 ✓")) == "北京 ✓"


def test_cache_is_reused_and_invalidated_by_content(tmp_path):
    path = write_txt(tmp_path / "a.txt", corpus())
    cfg = cfg_for(path, tmp_path)
    first = build_data(cfg, 16)
    assert first.tokenized
    second = build_data(cfg, 16)
    assert not second.tokenized and second.cache_path == first.cache_path
    # the validation split and every batch survive the rebuild (sampler is a pure function of index)
    assert (second.val_batch(64) == first.val_batch(64)).all()
    assert (second.train_batch(7, 3) == first.train_batch(7, 3)).all()
    assert not (first.train_batch(7, 3) == first.train_batch(8, 3)).all()
    write_txt(path, corpus(seed=1))                     # same file name, new content
    third = build_data(cfg, 16)
    assert third.tokenized and third.cache_path != first.cache_path


def test_corrupt_or_partial_cache_is_rebuilt(tmp_path):
    cfg = cfg_for(write_txt(tmp_path / "a.txt", corpus()), tmp_path)
    good = build_data(cfg, 16)
    batch = good.train_batch(0, 4)
    shard = good.cache_path / "train.bin"
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 0xFF
    shard.write_bytes(bytes(raw))                        # same size, different content
    again = build_data(cfg, 16)
    assert again.tokenized and (again.train_batch(0, 4) == batch).all()
    (again.cache_path / "meta.json").unlink()          # a build that died before its last write
    assert build_data(cfg, 16).tokenized


def test_val_split_is_fixed_and_disjoint_by_document(tmp_path):
    docs = corpus(200)
    a = build_data(cfg_for(write_txt(tmp_path / "a.txt", docs), tmp_path, tokenizer="byte", seed=0), 8)
    b = build_data(cfg_for(tmp_path / "a.txt", tmp_path, tokenizer="byte", seed=5, cache_dir=str(tmp_path / "c2")), 8)
    assert b.tokenized and np.array_equal(np.asarray(a._val), np.asarray(b._val))
    val_docs = bytes(np.asarray(a._val).tolist()).split(b"\xff")[:-1]
    train_docs = set(bytes(np.asarray(a._train).tolist()).split(b"\xff")[:-1])
    assert len(val_docs) == 20 and not train_docs & set(val_docs)
    # different data seeds: same val set, different training batches
    assert not (a.train_batch(0, 4) == b.train_batch(0, 4)).all()


def test_zst_jsonl_and_parquet_read_the_same_documents(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard
    docs = corpus(60)
    write_txt(tmp_path / "plain.txt", docs)
    (tmp_path / "z.txt.zst").write_bytes(zstandard.ZstdCompressor().compress((tmp_path / "plain.txt").read_bytes()))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"body": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    pq.write_table(pa.table({"body": docs}), tmp_path / "d.parquet")
    ref = build_data(cfg_for(tmp_path / "plain.txt", tmp_path, tokenizer="byte"), 8)
    for name, field in (("z.txt.zst", "text"), ("d.jsonl", "body"), ("d.parquet", "body")):
        src = build_data(cfg_for(tmp_path / name, tmp_path, tokenizer="byte", text_field=field), 8)
        assert np.array_equal(np.asarray(src._train), np.asarray(ref._train)), name


def test_globs_combine_files(tmp_path):
    write_txt(tmp_path / "p1.txt", corpus(30, seed=1))
    write_txt(tmp_path / "p2.txt", corpus(30, seed=2))
    src = build_data(cfg_for(f"{tmp_path}/p*.txt", tmp_path, tokenizer="byte"), 8)
    assert src.describe()["train_docs"] + src.describe()["val_docs"] == 60


@pytest.mark.parametrize("make,match", [
    (lambda p: str(p / "missing*.txt"), "no file matches"),
    (lambda p: str(write_txt(p / "empty.txt", ["", "  "])), "non-empty document"),
    (lambda p: str(write_txt(p / "x.csv", ["a", "b"])), "unsupported extension"),
])
def test_bad_sources_name_the_problem(tmp_path, make, match):
    with pytest.raises(DataError, match=match):
        build_data(cfg_for(make(tmp_path), tmp_path), 8)


def test_undecodable_bytes_name_file_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text\n\nmore \xc3\x28 broken")
    with pytest.raises(DataError, match=r"bad\.txt: not valid UTF-8 at byte offset 16"):
        build_data(cfg_for(bad, tmp_path, tokenizer="byte"), 8)


def test_small_bpe_vocab_and_bad_field(tmp_path):
    path = write_txt(tmp_path / "a.txt", corpus(10))
    with pytest.raises(ConfigError, match="data.vocab_size=200"):
        build_data(cfg_for(path, tmp_path, vocab_size=200), 8)
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="data.text_field"):
        build_data(cfg_for(tmp_path / "d.jsonl", tmp_path), 8)
    with pytest.raises(DataError, match="eval.tokens"):
        build_data(cfg_for(path, tmp_path, tokenizer="byte"), 8).val_batch(10**7)


def test_hub_source_offline_and_not_cached_reports_the_real_error_fast(tmp_path):
    # HF_HUB_OFFLINE is read when huggingface_hub is imported: a fresh process, as on a compute node
    code = ("from train.data import build_data; from train.data.config import DataConfig\n"
            f"build_data(DataConfig(source='hf:someone/corpus:en', cache_dir={str(tmp_path / 'c')!r}), 8)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode != 0
    assert re.search(r"hf:someone/corpus.*OfflineModeIsEnabled.*HF_HUB_OFFLINE.*local files", r.stderr), r.stderr
    assert time.perf_counter() - t0 < 60


def test_given_tokenizer_json(tmp_path):
    path = write_txt(tmp_path / "a.txt", corpus())
    first = build_data(cfg_for(path, tmp_path), 16)
    tok_file = first.cache_path / "tokenizer.json"
    src = build_data(cfg_for(path, tmp_path, tokenizer=str(tok_file), cache_dir=str(tmp_path / "c3")), 16)
    assert np.array_equal(np.asarray(src._train), np.asarray(first._train))


@pytest.mark.skipif(not (SHARED / "tiny_shakespeare" / "input.txt").exists(), reason="shared data absent")
def test_tiny_shakespeare(tmp_path):
    src = build_data(cfg_for(SHARED / "tiny_shakespeare" / "input.txt", tmp_path, vocab_size=512, max_docs=1500,
                             val_frac=0.05), 64)
    text = (SHARED / "tiny_shakespeare" / "input.txt").read_text()[:2000]
    assert src.decode(src.encode(text)) == text
    # BPE compresses English well below one token per byte
    assert len(src.encode(text)) < 0.5 * len(text.encode())
    assert src.val_batch(64 * 4).shape[0] == 4


@pytest.mark.skipif(not (SHARED / "wikipedia_en_2015" / "wiki_en_2015.valid.txt.zst").exists(),
                    reason="shared data absent")
def test_wikipedia_shard(tmp_path):
    src = build_data(cfg_for(SHARED / "wikipedia_en_2015" / "wiki_en_2015.valid.txt.zst", tmp_path,
                             vocab_size=1024, max_docs=60, val_frac=0.05), 128)
    assert src.describe()["train_docs"] + src.describe()["val_docs"] == 60
    assert src.train_batch(0, 2).shape == (2, 129)


@pytest.mark.parametrize("preset", sorted(p.name for p in PRESETS.glob("*.yaml")))
def test_presets_load_and_validate(preset):
    cfg = load_config(PRESETS / preset).resolved()
    assert cfg.data.source != "synthetic" or cfg.data.vocab_size > 0
    assert cfg.run.name


def test_presets_exist():
    names = {p.name for p in PRESETS.glob("*.yaml")}
    assert {"wikipedia_gpt.yaml", "tiny_shakespeare.yaml"} <= names


ARTICLES = [("Anarchism", "Anarchism is a political philosophy.\nIt has many currents of thought and strategy."),
            ("Apple Inc.", "Apple Inc. is an American technology company.\nIt was founded in 1976."),
            ("Cogency", ""),                                   # an empty article: its title stands alone
            ("Alien", "Alien may refer to:"),
            ("Astronomer", "An astronomer is a scientist who studies celestial bodies.")]


def wikiextractor_text(articles=ARTICLES) -> str:
    """Title line, blank line, body; articles separated by a blank line (an empty body leaves the title alone)."""
    return "".join(f"{t}\n\n{b}\n\n" if b else f"{t}\n\n" for t, b in articles)


def test_titled_text_files_are_read_as_whole_articles(tmp_path):
    from train.data.documents import read_documents, split_text
    docs = split_text(wikiextractor_text())
    assert docs == [f"{t}\n\n{b}" for t, b in ARTICLES if b]
    path = tmp_path / "wiki.txt"
    path.write_text(wikiextractor_text() * 3)
    assert len(list(read_documents(path, "text"))) == 12
    # plain paragraphs keep the blank-line rule
    assert split_text("First paragraph, a sentence.\n\nSecond one.\n\nThird one here.\n\nFourth.") == [
        "First paragraph, a sentence.", "Second one.", "Third one here.", "Fourth."]


@pytest.mark.skipif(not (SHARED / "wikipedia_en_2015" / "wiki_en_2015.valid.txt.zst").exists(),
                    reason="shared data absent")
def test_the_shipped_wikipedia_shard_reads_one_document_per_article():
    from train.data.documents import read_documents
    docs = list(read_documents(SHARED / "wikipedia_en_2015" / "wiki_en_2015.valid.txt.zst", "text"))
    # 307 articles (the data README), 4 of them empty; blank-line splitting made 610 "documents"
    assert len(docs) == 303
    assert all("\n\n" in d for d in docs) and all(len(d.split("\n", 1)[0]) <= 100 for d in docs)


def _tokenizer_with_added_tokens(tmp_path) -> Path:
    from train.data.tokenize import train_bpe
    tok = train_bpe(corpus(40), 300)
    tok.add_special_tokens(["<pad>", "<mask>"])
    path = tmp_path / "tok.json"
    tok.save(str(path))
    return path


def test_a_tokenizer_file_counts_its_added_tokens(tmp_path):
    path = _tokenizer_with_added_tokens(tmp_path)
    from tokenizers import Tokenizer
    full = Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
    txt = write_txt(tmp_path / "a.txt", corpus())
    cfg = load_config(None, [f"data.source={txt}", f"data.tokenizer={path}", "model.context=16",
                             "train.batch_tokens=64", "train.tokens=128", "eval.tokens=64"]).resolved()
    assert cfg.model.vocab_size == full == 302
    assert build_data(cfg.data, 16).vocab_size <= cfg.model.vocab_size


def test_a_missing_tokenizer_file_is_a_config_error(tmp_path):
    txt = write_txt(tmp_path / "a.txt", corpus())
    r = subprocess.run([sys.executable, "-m", "train", "--out", str(tmp_path / "run"), f"data.source={txt}",
                        f"data.tokenizer={tmp_path / 'nope.json'}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "data.tokenizer" in r.stderr and "nope.json" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def _hub_cache_with(tmp_path, docs) -> Path:
    """A Hugging Face home whose datasets cache holds 'someone/corpus' as a download would leave it."""
    code = f"""
import json, os, shutil, sys
from datasets import config
from datasets.packaged_modules.json.json import Json
src = {str(tmp_path / 'train.jsonl')!r}
with open(src, 'w') as f:
    for d in json.loads(sys.argv[1]): f.write(json.dumps({{'text': d}}) + '\\n')
b = Json(cache_dir={str(tmp_path / 'build')!r}, dataset_name='corpus', config_id='default',
         data_files={{'train': src}}, hash='0123abcd')
b.download_and_prepare()
shutil.move({str(tmp_path / 'build' / 'corpus')!r}, os.path.join(config.HF_DATASETS_CACHE, 'someone___corpus'))
"""
    home = tmp_path / "hf"
    r = subprocess.run([sys.executable, "-c", code, json.dumps(docs)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    return home


@pytest.mark.slow
def test_a_hub_dataset_in_the_local_cache_loads_offline(tmp_path):
    home = _hub_cache_with(tmp_path, corpus(50))
    code = ("from train.data import build_data; from train.data.config import DataConfig\n"
            f"s = build_data(DataConfig(source='hf:someone/corpus', tokenizer='byte', val_frac=0.1, "
            f"cache_dir={str(tmp_path / 'c')!r}), 8)\n"
            "print(s.describe()['train_docs'] + s.describe()['val_docs'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "50"


def test_a_save_to_disk_folder_loads_with_load_from_disk(tmp_path):
    import datasets
    datasets.Dataset.from_dict({"text": corpus(30)}).save_to_disk(str(tmp_path / "saved"))
    src = build_data(cfg_for(f"hf:{tmp_path / 'saved'}", tmp_path, tokenizer="byte"), 8)
    assert src.describe()["train_docs"] + src.describe()["val_docs"] == 30
    ref = build_data(cfg_for(write_txt(tmp_path / "a.txt", corpus(30)), tmp_path, tokenizer="byte",
                             cache_dir=str(tmp_path / "c2")), 8)
    assert np.array_equal(np.asarray(src._train), np.asarray(ref._train))


def test_start_up_on_a_cached_corpus_reads_neither_source_nor_shards_again(tmp_path, monkeypatch):
    import train.data.documents as documents
    cfg = cfg_for(write_txt(tmp_path / "a.txt", corpus()), tmp_path)
    first = build_data(cfg, 16)

    def no_hashing(path):
        raise AssertionError(f"{path} was read again to hash it")

    monkeypatch.setattr(documents, "sha256_file", no_hashing)
    again = build_data(cfg, 16)
    assert not again.tokenized and again.cache_path == first.cache_path


def test_a_vocabulary_far_above_what_the_corpus_yields_is_a_warning(tmp_path, caplog):
    import logging
    with caplog.at_level(logging.WARNING):
        src = build_data(cfg_for(write_txt(tmp_path / "a.txt", corpus(20)), tmp_path, vocab_size=8192), 16)
    assert src.vocab_size < 1000
    assert "data.vocab_size=8,192 but the BPE trained on" in caplog.text and "never be used" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for i in range(0, 200):
            src.train_array(i, 64)
    assert "epochs over the" in caplog.text and caplog.text.count("epochs over the") == 1


def test_a_full_disk_while_tokenizing_leaves_no_half_cache(tmp_path, monkeypatch):
    import errno

    import train.data.text as text
    cfg = cfg_for(write_txt(tmp_path / "a.txt", corpus()), tmp_path)

    def full(docs, tokenizer, out, dtype, advance=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(text, "encode_to_file", full)
    with pytest.raises(OSError, match="No space left"):
        build_data(cfg, 16)
    assert [p.name for p in (tmp_path / "cache" / "text").iterdir() if not p.name.endswith((".lock", ".json"))] == []
    monkeypatch.undo()
    assert build_data(cfg, 16).tokenized          # space freed: the same call builds it


def test_a_sweep_whose_eval_outgrows_the_held_out_text_fails_before_any_run_trains(tmp_path):
    """Each worker would fail at its first eval; the sweep says so once, naming the keys, before it launches any."""
    from sweeps import run_sweep
    from sweeps.spec import SweepError

    src = write_txt(tmp_path / "small.txt", corpus(40))
    spec = {"name": "small-val", "family": "grid", "axes": {"eval.tokens": [64, 65536]},   # the second run's eval
            "base": {"model": {"kind": "gpt", "context": 16, "head_dim": 8, "depth": 1, "width": 16},  # is too big
                     "data": {"source": str(src), "tokenizer": "bpe", "vocab_size": 320, "val_frac": 0.1,
                              "cache_dir": str(tmp_path / "cache"), "num_proc": 1},
                     "train": {"tokens": 2048, "batch_tokens": 256, "device": "cpu"},
                     "eval": {"points": 2}}}
    with pytest.raises(SweepError, match=r"eval.tokens=65536 needs 65537 validation tokens but .*small.txt' holds "
                                         r"\d+ \(raise data.val_frac or lower eval.tokens\)"):
        run_sweep(spec, tmp_path / "sweep", quiet=True, log=None)
    assert not list((tmp_path / "sweep").glob("*/summary.json"))
    # what the held-out split holds is enough: the same sweep trains
    spec["axes"]["eval.tokens"] = [64, 128]
    assert run_sweep(spec, tmp_path / "sweep2", quiet=True, log=None, jobs=1).exit_code == 0
