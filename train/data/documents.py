"""Reading documents: local text files and Hugging Face datasets (torch-free).

Local `data.source` is a comma-separated list of globs: `.txt`, `.jsonl`, `.parquet`,
each optionally `.zst`-compressed. Text must be valid UTF-8: undecodable bytes raise
`DataError` naming the file and the byte offset (in the decompressed stream), rather
than silently training on replacement characters.

`.txt` files: a blank line separates documents, with one exception measured on the
English Wikipedia shards in `../shared/data` (WikiExtractor output): each article is a
title line, a blank line, then its body, and articles are separated by a blank line,
so blank-line splitting alone makes every title a document of its own (half of the
"documents" of a shard). A file whose blank-line chunks are mostly such title lines,
each followed by a body, is read as titled articles: a title starts a document that
runs to the next title; a title with no body (an empty article) is dropped.

`hf:<name>[:<config>]` goes through `datasets` itself, so the Hub's own settings apply
(`HF_HUB_OFFLINE`, `HF_ENDPOINT` mirrors, proxies, the local cache); a folder written by
`Dataset.save_to_disk` is read with `datasets.load_from_disk`.
"""
from __future__ import annotations

import glob
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from train.contract import ConfigError
from train.data.config import DataConfig

_TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
# titled layout (see the module doc): the share of chunks that must look like titles, and
# the share of those that must be followed by a body, before a file is read that way
_TITLED_MIN_SHARE = 0.3
_TITLED_MIN_FOLLOWED = 0.8
_TITLE_MAX_CHARS = 100


class DataError(ConfigError):
    """Bad input data (missing/empty/undecodable files, unreachable dataset); the message names it."""


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
    if path.name.lower().endswith(".zst"):
        import zstandard
        try:
            # streaming decompression: frames written without a content size are fine too
            with open(path, "rb") as fh:
                return zstandard.ZstdDecompressor().stream_reader(fh).read()
        except zstandard.ZstdError as e:
            raise DataError(f"{path}: not a valid zstd file ({e})") from None
    return path.read_bytes()


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 at byte offset {e.start}"
                        f"{' of the decompressed stream' if path.name.endswith('.zst') else ''} "
                        f"({raw[e.start:e.start + 4]!r}); re-encode the file as UTF-8") from None


def _is_title(chunk: str) -> bool:
    """A WikiExtractor-style title: one short line, not indented, not ending like a sentence's lead-in."""
    s = chunk.strip()
    if "\n" in s or not 0 < len(s) <= _TITLE_MAX_CHARS or chunk[:1].isspace() or s.endswith((":", ",", ";")):
        return False
    return not s.endswith(".") or len(s.split()) <= 4   # "Apple Inc." is a title, "It rains." is not


def split_text(text: str) -> list[str]:
    """The documents of a .txt file's text (see the module doc for the two layouts)."""
    chunks = [c.strip("\n") for c in text.replace("\r\n", "\n").split("\n\n") if c.strip()]
    titles = [_is_title(c) for c in chunks]
    n_titles = sum(titles)
    followed = sum(1 for i in range(len(chunks) - 1) if titles[i] and not titles[i + 1])
    if len(chunks) < 4 or n_titles < _TITLED_MIN_SHARE * len(chunks) or followed < _TITLED_MIN_FOLLOWED * n_titles:
        return chunks
    docs: list[str] = []
    current: list[str] = []
    for chunk, title in zip(chunks, titles, strict=True):
        if title and current:
            if len(current) > 1 or not _is_title(current[0]):   # a lone title is an empty article
                docs.append("\n\n".join(current))
            current = []
        current.append(chunk)
    if current and (len(current) > 1 or not _is_title(current[0])):
        docs.append("\n\n".join(current))
    return docs


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
        yield from split_text(text)
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


# ---------------------------------------------------------------------------
# the sources' content digest, remembered by (path, size, mtime)

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def files_digest(files: list[Path], memo_file: Path | None = None) -> str:
    """sha256 over the files' paths and contents.

    Reading every byte of a corpus costs seconds at each run's start-up, so each file's
    digest is remembered in `memo_file` under its path, size and mtime: a file that
    changed gets a new size or mtime and is read again.
    """
    memo: dict[str, str] = {}
    if memo_file is not None:
        try:
            memo = json.loads(memo_file.read_text())
        except (OSError, ValueError):
            memo = {}
    h = hashlib.sha256()
    changed = False
    for f in files:
        st = f.stat()
        key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in memo:
            memo[key] = sha256_file(f)
            changed = True
        h.update(str(f.resolve()).encode() + b"\0" + memo[key].encode())
    if changed and memo_file is not None:
        try:
            from train.rundir import atomic_write_text
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(memo_file, json.dumps(memo))
        except OSError:
            pass  # a read-only cache only costs the re-read next time
    return h.hexdigest()


# ---------------------------------------------------------------------------
# Hugging Face datasets

def hf_documents(cfg: DataConfig) -> tuple[Iterable[str], str]:
    """(documents, identity) of an `hf:<name>[:<config>]` source, through `datasets` itself."""
    name, _, config = cfg.source[3:].partition(":")
    if not name:
        raise DataError("data.source='hf:' needs a dataset name: hf:<name>[:<config>]")
    import datasets
    try:
        if _is_saved_dataset(Path(name)):
            ds: Any = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                if cfg.hf_split not in ds:
                    raise DataError(f"data.hf_split={cfg.hf_split!r} is not a split of {name!r}: {sorted(ds)}")
                ds = ds[cfg.hf_split]
        else:
            ds = datasets.load_dataset(name, config or None, split=cfg.hf_split, streaming=cfg.streaming)
    except DataError:
        raise
    except Exception as e:  # the Hub client raises many types (connection, auth, not found, offline)
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        hint = ("HF_HUB_OFFLINE is set and the dataset is not in the local Hugging Face cache; "
                if offline else "")
        raise DataError(f"data.source={cfg.source!r}: datasets could not load it: {type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''} ({hint}download it where the "
                        f"Hub is reachable, or point data.source at local files such as "
                        f"'/path/to/*.parquet')") from None
    columns = ds.column_names or [cfg.text_field]
    if cfg.text_field not in columns:
        raise DataError(f"data.text_field={cfg.text_field!r} is not a column of {cfg.source!r}: {columns}")
    ident = f"hf:{name}:{config}:{cfg.hf_split}:{getattr(ds, '_fingerprint', '')}"
    return (row[cfg.text_field] for row in ds if row[cfg.text_field]), ident


def _is_saved_dataset(path: Path) -> bool:
    """A folder written by Dataset(Dict).save_to_disk."""
    return path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists())
