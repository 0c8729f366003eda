"""Real text: local files or Hugging Face datasets, tokenized once into memory-mapped shards.

Pipeline (each step cached by content, so a second run does no tokenization):
1. Read documents (train/data/documents.py): local `.txt`/`.jsonl`/`.parquet` files,
   zstd-compressed too, or `hf:<name>[:<config>]` through `datasets`.
2. Split by document: a fixed pseudo-random `data.val_frac` of the documents is
   held out (the same whatever `data.seed`, so every run sees the same val set).
3. Tokenizer (train/data/tokenize.py): byte-level BPE trained to `data.vocab_size`,
   plain bytes, or a given `tokenizer.json`.
4. Tokenize in batches (the tokenizer library's own threads), append the
   end-of-document token to each document, and stream `train.bin` / `val.bin`
   (uint16 when the vocabulary fits, else uint32) plus `meta.json` carrying the
   shards' sha256, sizes and mtimes. `meta.json` is written last; the build happens in
   a temporary sibling that is renamed into place, so a crash leaves no half cache.

One process builds a cache, the others wait: a file lock (`filelock`) beside the cache
directory is held from the check to the rename, so sweep workers and DDP ranks that
start on a cold cache tokenize once. A run's start-up re-reads nothing the cache has
already proved: the sources' digest is remembered by path, size and mtime, and a
shard whose size and mtime match its `meta.json` is trusted (any other shard is
hashed again and rebuilt when it differs).

Batches: training window i is drawn at random positions of the train shard with
a generator seeded by (data.seed, index, batch_size); the validation windows are
the consecutive non-overlapping windows of the val shard.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from train.data import documents
from train.data.config import DataConfig
from train.data.documents import (DataError, files_digest, hf_documents, read_documents,  # noqa: F401 (DataError
                                  resolve_files)                                            # is re-exported)
from train.data.progress import BuildProgress
from train.data.tokenize import TokenizerSpec, build_tokenizer, encode_to_file, load_tokenizer

log = logging.getLogger(__name__)

CACHE_VERSION = 2
_VAL_SPLIT_SEED = 0x5EED_DA7A
# Muennighoff et al. 2023 ("Scaling Data-Constrained Language Models"): up to about 4 epochs
# of repeated data is nearly as good as fresh data; past that the returns fall off quickly
MAX_GOOD_EPOCHS = 4.0
# a BPE vocabulary this much smaller than data.vocab_size leaves embedding rows no token uses
VOCAB_SLACK = 0.9


def default_cache_dir(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get("SCALING_TESTBED_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scaling-testbed"


def _cache_ok(d: Path) -> dict[str, Any] | None:
    """meta.json when the cache at `d` is complete and its shards match it.

    A shard with the recorded size and mtime is trusted without reading it; any other is
    hashed and compared with the recorded sha256.
    """
    try:
        meta = json.loads((d / "meta.json").read_text())
        for split in ("train", "val"):
            st = (d / f"{split}.bin").stat()
            if st.st_size != meta[f"{split}_tokens"] * np.dtype(meta["dtype"]).itemsize:
                return None
            if st.st_mtime_ns != meta.get(f"{split}_mtime_ns") and \
                    documents.sha256_file(d / f"{split}.bin") != meta[f"{split}_sha256"]:
                return None
        if meta["tokenizer"]["kind"] != "byte" and not (d / "tokenizer.json").is_file():
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _split_docs(n_docs: int, val_frac: float) -> np.ndarray:
    """Boolean mask of validation documents: a fixed pseudo-random subset, at least one, never all."""
    n_val = min(n_docs - 1, max(1, round(val_frac * n_docs)))
    order = np.random.default_rng(_VAL_SPLIT_SEED).permutation(n_docs)
    mask = np.zeros(n_docs, dtype=bool)
    mask[order[:n_val]] = True
    return mask


def _inputs(cfg: DataConfig) -> tuple[Any, str]:
    """(documents iterable, identity of the inputs) for the data config."""
    if cfg.source.startswith("hf:"):
        return hf_documents(cfg)
    files = resolve_files(cfg.source)
    ident = "files:" + files_digest(files, default_cache_dir(cfg) / "text" / "sources.json")

    def docs():
        for f in files:
            yield from read_documents(f, cfg.text_field)
    return docs(), ident


def _build(cfg: DataConfig, spec: TokenizerSpec, path: Path, docs_iter, key: dict, quiet: bool) -> dict[str, Any]:
    if cfg.num_proc and "RAYON_NUM_THREADS" not in os.environ:
        os.environ["RAYON_NUM_THREADS"] = str(cfg.num_proc)   # read when the tokenizers pool first starts
    progress = BuildProgress(f"data {cfg.source}", enabled=not quiet)
    progress.say(f"first use: tokenizing into {path}")
    docs: list[str] = []
    for doc in docs_iter:
        docs.append(doc)
        if cfg.max_docs and len(docs) >= cfg.max_docs:
            break
    if len(docs) < 2:
        raise DataError(f"data.source={cfg.source!r} holds {len(docs)} non-empty document(s); "
                        f"at least 2 are needed to hold one out for validation")
    val_mask = _split_docs(len(docs), cfg.val_frac)
    train_docs = [d for d, v in zip(docs, val_mask, strict=True) if not v]
    val_docs = [d for d, v in zip(docs, val_mask, strict=True) if v]
    del docs
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if spec.kind == "bpe":
            progress.say(f"training a {spec.vocab_size}-token BPE on {len(train_docs):,} documents")
        tokenizer, hf_tok = build_tokenizer(spec, train_docs, f"data.tokenizer={cfg.tokenizer!r}")
        if hf_tok is not None:
            hf_tok.save(str(tmp / "tokenizer.json"))
        dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
        counts = {}
        for split, split_docs in (("train", train_docs), ("val", val_docs)):
            progress.start(f"tokenizing {split}", len(split_docs))
            counts[split] = encode_to_file(split_docs, tokenizer, tmp / f"{split}.bin", dtype, progress.advance)
            progress.finish()
        meta = {"key": key, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
                "tokenizer": {"kind": spec.kind}, "train_docs": len(train_docs), "val_docs": len(val_docs),
                "train_tokens": counts["train"], "val_tokens": counts["val"]}
        for split in ("train", "val"):
            meta[f"{split}_sha256"] = documents.sha256_file(tmp / f"{split}.bin")
            meta[f"{split}_mtime_ns"] = (tmp / f"{split}.bin").stat().st_mtime_ns
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))   # last: marks the cache complete
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def prepare_text(cfg: DataConfig, quiet: bool = False) -> tuple[Path, dict[str, Any], bool]:
    """Build the token cache of a text data config unless it exists: (cache path, meta, built now).

    Holds a file lock from the check to the rename, so concurrent callers build it once.
    """
    from filelock import FileLock
    try:
        cfg.validate()
    except ValueError as e:
        raise DataError(str(e)) from None
    spec = TokenizerSpec.from_config(cfg)
    docs_iter, ident = _inputs(cfg)
    key = {"version": CACHE_VERSION, "inputs": ident, "tokenizer": spec.identity(),
           "val_frac": cfg.val_frac, "max_docs": cfg.max_docs, "text_field": cfg.text_field}
    path = _cache_path(cfg, key)
    meta = _cache_ok(path)
    if meta is not None:
        return path, meta, False
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except TimeoutError:
        if not quiet:
            print(f"data {cfg.source}: another process is tokenizing it into {path}; waiting for it",
                  file=sys.stderr, flush=True)
        lock.acquire()
    try:
        meta = _cache_ok(path)   # built by the process we waited for
        if meta is not None:
            return path, meta, False
        return path, _build(cfg, spec, path, docs_iter, key, quiet), True
    finally:
        lock.release()


def cache_ready(cfg: DataConfig) -> bool:
    """Whether a local-file corpus is already tokenized (Hub sources are not checked: that needs the Hub)."""
    if cfg.source.startswith("hf:"):
        return False
    try:
        spec = TokenizerSpec.from_config(cfg)
        _, ident = _inputs(cfg)
    except (DataError, OSError):
        return False
    key = {"version": CACHE_VERSION, "inputs": ident, "tokenizer": spec.identity(),
           "val_frac": cfg.val_frac, "max_docs": cfg.max_docs, "text_field": cfg.text_field}
    return _cache_ok(_cache_path(cfg, key)) is not None


def _cache_path(cfg: DataConfig, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return default_cache_dir(cfg) / "text" / digest


def data_warnings(cfg: DataConfig, meta: dict[str, Any], train_tokens: int | None = None) -> list[str]:
    """What a researcher should hear about a text corpus before training on it."""
    out = []
    if cfg.tokenizer == "bpe" and meta["vocab_size"] < VOCAB_SLACK * cfg.vocab_size:
        out.append(f"data.vocab_size={cfg.vocab_size:,} but the BPE trained on {cfg.source!r} has only "
                   f"{meta['vocab_size']:,} tokens (the corpus has no more merges to learn): "
                   f"{cfg.vocab_size - meta['vocab_size']:,} embedding rows will never be used; "
                   f"set data.vocab_size={meta['vocab_size']} or use more text")
    if train_tokens:
        epochs = train_tokens / max(meta["train_tokens"], 1)
        if epochs > MAX_GOOD_EPOCHS:
            out.append(f"train.tokens={train_tokens:,} is {epochs:.1f} epochs over the {meta['train_tokens']:,} "
                       f"training tokens of {cfg.source!r}; past about {MAX_GOOD_EPOCHS:g} epochs repeated data "
                       f"is worth much less than fresh data (Muennighoff et al. 2023), so losses and fitted laws "
                       f"reflect memorisation; use more text or fewer tokens")
    return out


def val_tokens_needed(eval_tokens: int, context: int) -> int:
    """The held-out tokens an eval of `eval_tokens` reads: whole windows of `context` tokens plus one target."""
    return (eval_tokens // context) * context + 1


def val_shortfall(cfg: DataConfig, eval_tokens: int, context: int, val_tokens: int) -> str:
    """What is wrong when an eval of `eval_tokens` needs more than the corpus's `val_tokens` held-out tokens
    (`val_tokens_needed`), naming the keys to change; "" when they suffice."""
    need = val_tokens_needed(eval_tokens, context)
    if need <= val_tokens:
        return ""
    return (f"eval.tokens={eval_tokens} needs {need} validation tokens but {cfg.source!r} holds {val_tokens} "
            f"(raise data.val_frac or lower eval.tokens)")


class TextSource:
    """DataSource over tokenized real text (see the module docstring)."""

    def __init__(self, cfg: DataConfig, context: int, quiet: bool = False):
        if context < 1:
            raise ValueError(f"model.context must be >= 1, got {context}")
        self.cfg, self.context = cfg, context
        self.cache_path, self.meta, self.tokenized = prepare_text(cfg, quiet=quiet)
        self.vocab_size = int(self.meta["vocab_size"])
        self.eos_id = int(self.meta["eos_id"])
        self._tokenizer = None
        self._train = np.memmap(self.cache_path / "train.bin", dtype=self.meta["dtype"], mode="r")
        self._val = np.memmap(self.cache_path / "val.bin", dtype=self.meta["dtype"], mode="r")
        if len(self._train) < context + 1:
            raise DataError(f"data.source={cfg.source!r}: {len(self._train)} training tokens are fewer than "
                            f"one window of model.context + 1 = {context + 1}")
        for w in data_warnings(cfg, self.meta):
            log.warning("warning: %s", w)
        self._epoch_warned = False

    @property
    def tokenizer(self):
        """Loaded on first use: training reads only the shards."""
        if self._tokenizer is None:
            path = self.cache_path / "tokenizer.json"
            self._tokenizer = load_tokenizer(self.meta["tokenizer"]["kind"], path, self.eos_id)
        return self._tokenizer

    # ---- the DataSource interface -------------------------------------
    def train_array(self, index: int, batch_size: int) -> np.ndarray:
        if index < 0 or batch_size < 1:
            raise ValueError(f"train batch index must be >= 0 and batch_size >= 1, got {index}, {batch_size}")
        L = self.context + 1
        if not self._epoch_warned and (index + 1) * batch_size * self.context > MAX_GOOD_EPOCHS * len(self._train):
            self._epoch_warned = True
            log.warning("warning: %s", data_warnings(self.cfg, self.meta, (index + 1) * batch_size * self.context)[-1])
        rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, 1, index, batch_size]))
        starts = rng.integers(0, len(self._train) - L + 1, size=batch_size)
        return self._train[starts[:, None] + np.arange(L)].astype(np.int64)

    def val_array(self, n_tokens: int) -> np.ndarray:
        n_rows = n_tokens // self.context
        if n_rows < 1:
            raise ValueError(f"eval.tokens={n_tokens} is below one window of model.context={self.context} tokens")
        problem = val_shortfall(self.cfg, n_tokens, self.context, len(self._val))
        if problem:
            raise DataError(problem)
        idx = np.arange(n_rows)[:, None] * self.context + np.arange(self.context + 1)
        return self._val[idx].astype(np.int64)

    def train_batch(self, index: int, batch_size: int):
        import torch
        return torch.from_numpy(self.train_array(index, batch_size))

    def val_batch(self, n_tokens: int):
        import torch
        return torch.from_numpy(self.val_array(n_tokens))

    def loss_floor(self, val: Any) -> None:
        return None  # unknown for real text

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode_batch([text])[0]

    def decode(self, ids) -> str:
        return self.tokenizer.decode(ids)

    def describe(self) -> dict[str, Any]:
        m = self.meta
        return {"source": self.cfg.source, "tokenizer": self.cfg.tokenizer, "vocab_size": self.vocab_size,
                "context": self.context, "seed": self.cfg.seed, "cache": str(self.cache_path),
                "train_tokens": m["train_tokens"], "val_tokens": m["val_tokens"],
                "train_docs": m["train_docs"], "val_docs": m["val_docs"], "max_docs": self.cfg.max_docs}
