"""Real text: local files or Hugging Face datasets, tokenized once into memory-mapped shards.

Pipeline (each step cached by content, so a second run does no tokenization):
1. Read documents. Local `data.source` is a comma-separated list of globs:
   `.txt` (documents are separated by blank lines), `.jsonl` (one JSON object a
   line, text in `data.text_field`), `.parquet` (column `data.text_field`), each
   optionally `.zst`-compressed. `hf:<name>[:<config>]` loads a Hub dataset
   with `datasets` (split `data.hf_split`, optionally streaming).
   Text must be valid UTF-8: undecodable bytes raise `DataError` naming the file
   and the byte offset (in the decompressed stream), rather than silently
   training on replacement characters.
2. Split by document: a fixed pseudo-random `data.val_frac` of the documents is
   held out (the same whatever `data.seed`, so every run sees the same val set).
3. Tokenizer: byte-level BPE trained with `tokenizers` on the training documents
   to `data.vocab_size` (cached), plain bytes (256 ids; 0xFF, a byte that never
   occurs in UTF-8, separates documents), or a given `tokenizer.json`.
4. Tokenize in parallel (`datasets.map(num_proc=...)`), append the end-of-document
   token to each document, and write `train.bin` / `val.bin` (uint16 when the
   vocabulary fits, else uint32) plus `meta.json` carrying the shards' sha256.
   `meta.json` is written last and atomically; a cache whose shards do not
   match it is rebuilt.

Batches: training window i is drawn at random positions of the train shard with
a generator seeded by (data.seed, index, batch_size); the validation windows are
the consecutive non-overlapping windows of the val shard.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from train.config import ConfigError
from train.data.config import DataConfig

log = logging.getLogger(__name__)

EOS_TEXT = "<|endoftext|>"
BYTE_EOS = 0xFF          # never a byte of valid UTF-8, so it can separate documents in the byte tokenizer
CACHE_VERSION = 1
_VAL_SPLIT_SEED = 0x5EED_DA7A
_HUB_PROBE_TIMEOUT_S = 5.0
_TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


class DataError(ConfigError):
    """Bad input data (missing/empty/undecodable files, unreachable dataset); the message names it."""


# ---------------------------------------------------------------------------
# reading documents

def resolve_files(source: str) -> list[Path]:
    """Expand `data.source`'s comma-separated globs into files, in a stable order."""
    files: list[Path] = []
    for pattern in (p.strip() for p in source.split(",")):
        if not pattern:
            continue
        hits = sorted(glob.glob(os.path.expanduser(pattern)))
        if not hits:
            raise DataError(f"data.source: no file matches {pattern!r}")
        for h in hits:
            path = Path(h)
            if not path.is_file():
                raise DataError(f"data.source: {h!r} is not a file")
            if _kind(path) is None:
                raise DataError(f"data.source: {h!r} has an unsupported extension "
                                f"(use .txt, .jsonl, .parquet, optionally with .zst)")
            files.append(path)
    if not files:
        raise DataError("data.source names no files")
    return files


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".zst"):
        name = name[:-4]
    for suf in _TEXT_SUFFIXES:
        if name.endswith(suf):
            return "jsonl" if suf == ".json" else suf[1:]
    return None


def _raw_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.lower().endswith(".zst"):
        import zstandard
        try:
            # streaming decompression: frames written without a content size are fine too
            return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
        except zstandard.ZstdError as e:
            raise DataError(f"{path}: not a valid zstd file ({e})") from None
    return data


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 at byte offset {e.start}"
                        f"{' of the decompressed stream' if path.name.endswith('.zst') else ''} "
                        f"({raw[e.start:e.start + 4]!r}); re-encode the file as UTF-8") from None


def read_documents(path: Path, text_field: str) -> Iterator[str]:
    """The documents of one local file (empty documents are skipped)."""
    kind = _kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq
        try:
            table = pq.read_table(io.BytesIO(_raw_bytes(path)))
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataError(f"{path}: cannot read as parquet ({e})") from None
        if text_field not in table.column_names:
            raise DataError(f"{path}: no column {text_field!r} (data.text_field); columns: {table.column_names}")
        for t in table.column(text_field).to_pylist():
            if t:
                yield t
        return
    text = _decode(path, _raw_bytes(path))
    if kind == "txt":
        # documents are separated by blank lines
        for doc in text.replace("\r\n", "\n").split("\n\n"):
            if doc.strip():
                yield doc.strip("\n")
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or text_field not in obj:
            raise DataError(f"{path}:{lineno}: no field {text_field!r} (data.text_field)")
        if obj[text_field]:
            yield str(obj[text_field])


def _files_hash(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.resolve()).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _hub_reachable(timeout_s: float = _HUB_PROBE_TIMEOUT_S) -> bool:
    """A bounded probe: DNS lookup has no timeout of its own, so run it in a daemon thread."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", ""):
        return False
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout_s).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout_s)
    return bool(ok)


def _hf_dataset(cfg: DataConfig):
    """(documents iterable, identity string) for an `hf:<name>[:<config>]` source."""
    spec = cfg.source[3:]
    name, _, config = spec.partition(":")
    if not name:
        raise DataError("data.source='hf:' needs a dataset name: hf:<name>[:<config>]")
    hint = (f"data.source={cfg.source!r}: the Hugging Face Hub is not reachable from this machine; "
            f"download the dataset where it is and point data.source at local files "
            f"(e.g. data.source='/path/to/*.parquet' or '/path/to/*.jsonl.zst')")
    if not Path(name).exists() and not _hub_reachable():
        raise DataError(hint)
    import datasets
    try:
        ds = datasets.load_dataset(name, config or None, split=cfg.hf_split, streaming=cfg.streaming)
    except Exception as e:  # the Hub client raises many types (connection, auth, not found)
        raise DataError(f"{hint} ({type(e).__name__}: {e})") from None
    if cfg.text_field not in (ds.column_names or [cfg.text_field]):
        raise DataError(f"data.text_field={cfg.text_field!r} is not a column of {cfg.source!r}: {ds.column_names}")
    ident = f"hf:{name}:{config}:{cfg.hf_split}:{getattr(ds, '_fingerprint', '')}"
    return (row[cfg.text_field] for row in ds if row[cfg.text_field]), ident


# ---------------------------------------------------------------------------
# tokenizers

@dataclass(frozen=True)
class TokenizerSpec:
    kind: str            # bpe | byte | file
    vocab_size: int
    path: str = ""

    @staticmethod
    def from_config(cfg: DataConfig) -> "TokenizerSpec":
        if cfg.tokenizer == "byte":
            return TokenizerSpec("byte", 256)
        if cfg.tokenizer == "bpe":
            if cfg.vocab_size < 257:
                raise DataError(f"data.vocab_size={cfg.vocab_size} is too small for byte-level BPE: "
                                f"it needs the 256 byte symbols plus {EOS_TEXT} (>= 257)")
            return TokenizerSpec("bpe", cfg.vocab_size)
        if cfg.tokenizer.endswith(".json"):
            if not Path(cfg.tokenizer).is_file():
                raise DataError(f"data.tokenizer: file {cfg.tokenizer!r} does not exist")
            return TokenizerSpec("file", 0, cfg.tokenizer)
        raise DataError(f"data.tokenizer must be bpe, byte or a path to tokenizer.json, got {cfg.tokenizer!r}")

    def identity(self) -> str:
        if self.kind == "file":
            return "file:" + hashlib.sha256(Path(self.path).read_bytes()).hexdigest()
        return f"{self.kind}:{self.vocab_size}"


def train_bpe(docs: list[str], vocab_size: int):
    """Byte-level BPE (GPT-2 style pre-tokenization) with one special token, id 0 = end of document."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    return tok


class ByteTokenizer:
    """UTF-8 bytes as ids; 0xFF (never valid UTF-8) marks the end of a document."""
    vocab_size = 256
    eos_id = BYTE_EOS

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if i != BYTE_EOS).decode("utf-8", errors="strict")


class HFTokenizer:
    """A `tokenizers.Tokenizer` behind the same small interface as ByteTokenizer."""

    def __init__(self, tok, eos_id: int):
        self.tok, self.eos_id = tok, eos_id
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids if i != self.eos_id], skip_special_tokens=True)

    def __getstate__(self):
        # `datasets.map(num_proc>1)` pickles the tokenizer; the JSON form is the portable one
        return {"json": self.tok.to_str(), "eos_id": self.eos_id}

    def __setstate__(self, state):
        from tokenizers import Tokenizer
        self.__init__(Tokenizer.from_str(state["json"]), state["eos_id"])


def _eos_of(tok, where: str) -> int:
    for name in (EOS_TEXT, "</s>", "<eos>", "<|end_of_text|>", "[SEP]"):
        i = tok.token_to_id(name)
        if i is not None:
            return i
    raise DataError(f"{where}: the tokenizer has no end-of-document token ({EOS_TEXT}, </s>, <eos>, ...)")


# ---------------------------------------------------------------------------
# the cache

def default_cache_dir(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    env = os.environ.get("SCALING_TESTBED_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "scaling-testbed"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _cache_ok(d: Path) -> dict[str, Any] | None:
    """meta.json when the cache at `d` is complete and its shards match their recorded hashes."""
    try:
        meta = json.loads((d / "meta.json").read_text())
        for split in ("train", "val"):
            f = d / f"{split}.bin"
            if f.stat().st_size != meta[f"{split}_tokens"] * np.dtype(meta["dtype"]).itemsize:
                return None
            if _sha256_file(f) != meta[f"{split}_sha256"]:
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


def _tokenize_to_file(docs: list[str], tokenizer, out: Path, dtype: np.dtype, num_proc: int) -> int:
    """Tokenize `docs` (datasets.map over documents), append EOS to each, write ids to `out`; return the count."""
    import datasets
    ds = datasets.Dataset.from_dict({"text": docs})
    eos = tokenizer.eos_id

    def encode(batch):
        return {"ids": [ids + [eos] for ids in tokenizer.encode_batch(batch["text"])]}

    n_proc = max(1, min(num_proc, len(docs) // 256))  # processes only pay off for many documents
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ds = ds.map(encode, batched=True, batch_size=256, remove_columns=["text"],
                    num_proc=n_proc if n_proc > 1 else None, keep_in_memory=True)
    finally:
        if bars:
            datasets.enable_progress_bars()
    n = 0
    with open(out, "wb") as fh:
        for batch in ds.with_format("numpy").iter(batch_size=4096):
            ids = np.concatenate(list(batch["ids"])) if len(batch["ids"]) else np.zeros(0)
            fh.write(ids.astype(dtype).tobytes())
            n += len(ids)
    return n


class TextSource:
    """DataSource over tokenized real text (see the module docstring)."""

    def __init__(self, cfg: DataConfig, context: int):
        if context < 1:
            raise ValueError(f"model.context must be >= 1, got {context}")
        try:
            cfg.validate()
        except ValueError as e:
            raise DataError(str(e)) from None
        self.cfg, self.context = cfg, context
        self.spec = TokenizerSpec.from_config(cfg)
        self.tokenized = False           # True when this construction had to tokenize (cache miss)
        self.cache_path, self.meta = self._load_or_build()
        self.tokenizer = self._load_tokenizer()
        self.vocab_size = int(self.meta["vocab_size"])
        self.eos_id = int(self.meta["eos_id"])
        self._train = np.memmap(self.cache_path / "train.bin", dtype=self.meta["dtype"], mode="r")
        self._val = np.memmap(self.cache_path / "val.bin", dtype=self.meta["dtype"], mode="r")
        if len(self._train) < context + 1:
            raise DataError(f"data.source={cfg.source!r}: {len(self._train)} training tokens are fewer than "
                            f"one window of model.context + 1 = {context + 1}")

    # ---- building ----------------------------------------------------
    def _inputs(self) -> tuple[Any, str]:
        if self.cfg.source.startswith("hf:"):
            return _hf_dataset(self.cfg)
        files = resolve_files(self.cfg.source)
        ident = "files:" + _files_hash(files)

        def docs():
            for f in files:
                yield from read_documents(f, self.cfg.text_field)
        return docs(), ident

    def _load_or_build(self) -> tuple[Path, dict[str, Any]]:
        cfg = self.cfg
        docs_iter, ident = self._inputs()
        key = {"version": CACHE_VERSION, "inputs": ident, "tokenizer": self.spec.identity(),
               "val_frac": cfg.val_frac, "max_docs": cfg.max_docs, "text_field": cfg.text_field}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        path = default_cache_dir(cfg) / "text" / digest
        meta = _cache_ok(path)
        if meta is not None:
            return path, meta
        self.tokenized = True
        return path, self._build(path, docs_iter, key)

    def _build(self, path: Path, docs_iter, key: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        docs: list[str] = []
        for doc in docs_iter:
            docs.append(doc)
            if cfg.max_docs and len(docs) >= cfg.max_docs:
                break
        if len(docs) < 2:
            raise DataError(f"data.source={cfg.source!r} holds {len(docs)} non-empty document(s); "
                            f"at least 2 are needed to hold one out for validation")
        val_mask = _split_docs(len(docs), cfg.val_frac)
        train_docs = [d for d, v in zip(docs, val_mask) if not v]
        val_docs = [d for d, v in zip(docs, val_mask) if v]
        # build in a temporary sibling, then swap in: a crash leaves no half cache under the real name
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log.info("tokenizing %d documents from %s into %s", len(docs), cfg.source, path)
        if self.spec.kind == "byte":
            tokenizer = ByteTokenizer()
            tok_meta = {"kind": "byte"}
        else:
            if self.spec.kind == "bpe":
                hf_tok = train_bpe(train_docs, self.spec.vocab_size)
            else:
                from tokenizers import Tokenizer
                hf_tok = Tokenizer.from_file(self.spec.path)
            hf_tok.save(str(tmp / "tokenizer.json"))
            tokenizer = HFTokenizer(hf_tok, _eos_of(hf_tok, f"data.tokenizer={cfg.tokenizer!r}"))
            tok_meta = {"kind": self.spec.kind}
        dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32)
        num_proc = cfg.num_proc or os.cpu_count() or 1
        n_train = _tokenize_to_file(train_docs, tokenizer, tmp / "train.bin", dtype, num_proc)
        n_val = _tokenize_to_file(val_docs, tokenizer, tmp / "val.bin", dtype, num_proc)
        meta = {
            "key": key, "dtype": dtype.name, "vocab_size": tokenizer.vocab_size, "eos_id": tokenizer.eos_id,
            "tokenizer": tok_meta, "train_docs": len(train_docs), "val_docs": len(val_docs),
            "train_tokens": n_train, "val_tokens": n_val,
            "train_sha256": _sha256_file(tmp / "train.bin"), "val_sha256": _sha256_file(tmp / "val.bin"),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))   # last: marks the cache complete
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, path)
        except OSError:
            # another process (a sweep sibling, a DDP rank) finished the same build first
            theirs = _cache_ok(path)
            shutil.rmtree(tmp, ignore_errors=True)
            if theirs is None:
                raise
            return theirs
        return meta

    def _load_tokenizer(self):
        if self.meta["tokenizer"]["kind"] == "byte":
            return ByteTokenizer()
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(self.cache_path / "tokenizer.json"))
        return HFTokenizer(tok, int(self.meta["eos_id"]))

    # ---- the DataSource interface -------------------------------------
    def train_array(self, index: int, batch_size: int) -> np.ndarray:
        if index < 0 or batch_size < 1:
            raise ValueError(f"train batch index must be >= 0 and batch_size >= 1, got {index}, {batch_size}")
        L = self.context + 1
        rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, 1, index, batch_size]))
        starts = rng.integers(0, len(self._train) - L + 1, size=batch_size)
        return self._train[starts[:, None] + np.arange(L)].astype(np.int64)

    def val_array(self, n_tokens: int) -> np.ndarray:
        n_rows = n_tokens // self.context
        if n_rows < 1:
            raise ValueError(f"eval.tokens={n_tokens} is below one window of model.context={self.context} tokens")
        need = n_rows * self.context + 1
        if need > len(self._val):
            raise DataError(f"eval.tokens={n_tokens} needs {need} validation tokens but {self.cfg.source!r} "
                            f"holds {len(self._val)} (raise data.val_frac or lower eval.tokens)")
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
