"""The run directory on disk (torch-free): atomic JSON, append-only JSONL, readers.

Layout (see DESIGN.md): config.json (resolved config, written before step 0),
metrics.jsonl (one row a line, append-only), summary.json (atomic, at the end
and on failure), ckpt/ (checkpoints).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, IO, Iterable

from train.contract import CKPT_DIR, CONFIG, METRICS, SUMMARY  # noqa: F401  (re-exported: the run directory's names)


def _fsync_dir(path: Path) -> None:
    # make the rename itself durable; not every platform lets a directory be opened
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class NoSpaceLeft(OSError):
    """A write failed because the file system is full; the message names the file and what it needed."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def no_space(path: str | Path, needed: int | None) -> NoSpaceLeft:
    """The one error a full disk gives: which file, how much it needed, how much is free."""
    path = Path(path)
    try:
        free = f", {_size(shutil.disk_usage(path.parent).free)} free"
    except OSError:
        free = ""
    need = f"needed {_size(needed)}" if needed is not None else "needed more"
    return NoSpaceLeft(errno.ENOSPC, f"no space left on device writing {path} ({need}{free}); "
                                     f"free some space and rerun the same command: it resumes")


def is_no_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def is_write_leftover(name: str) -> bool:
    """Whether a file name is a temporary file of the trainer's own writes (`atomic_write`, the
    writability probe): what a process killed mid-write leaves. The lock holder may delete them."""
    return name.startswith(".") and name.endswith(".tmp")


def remove_write_leftovers(directory: str | Path) -> list[Path]:
    """Delete the temporary files (`is_write_leftover`) that killed writes left in `directory`.

    Only a run directory's lock holder calls this, so no live writer owns them.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    leftovers = [d / n for n in os.listdir(d) if is_write_leftover(n)]
    for p in leftovers:
        p.unlink(missing_ok=True)
    return leftovers


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], size: int | None = None) -> None:
    """Call `write(f)` on a temporary binary file in the same directory, fsync, then rename over `path`.

    A reader sees either the old file or the new one, never a half-written one. A full
    disk raises `NoSpaceLeft` (with `size`, the bytes needed, when known) and leaves no
    temporary file behind.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
        if is_no_space(e) and not isinstance(e, NoSpaceLeft):
            raise no_space(path, size) from None
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    data = text.encode()
    atomic_write(path, lambda f: f.write(data), len(data))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


class JsonlWriter:
    """Append-only JSONL file; each row is flushed as soon as it is written.

    A crash can tear at most the last line, which `read_metrics` skips.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = open(self.path, "a")

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, separators=(",", ":")) + "\n"
        try:
            self._f.write(line)
            self._f.flush()
        except OSError as e:
            if is_no_space(e):
                raise no_space(self.path, len(line)) from None
            raise

    def close(self) -> None:
        if not self._f.closed:
            try:
                self._f.close()
            except OSError as e:   # the buffered tail of a row that already failed on a full disk
                if not is_no_space(e):
                    raise

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All complete rows of a metrics.jsonl; a torn (unparsable) last line is skipped.

    A bad line anywhere else means the file was damaged, not torn: that raises,
    naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # torn by a crash mid-write
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
        rows.append(row)
    return rows


def salvage_metrics(path: str | Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The readable rows of a metrics.jsonl and the (1-based) numbers of damaged lines.

    For the trainer's resume, which rewrites the file from its intact rows instead of
    failing forever on one damaged line; a torn last line is skipped as `read_metrics` does.
    """
    path = Path(path)
    if not path.exists():
        return [], []
    lines = path.read_text(errors="replace").splitlines()
    rows, damaged = [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int) or "kind" not in row:
                raise ValueError
        except ValueError:
            if i < len(lines) - 1:
                damaged.append(i + 1)
            continue
        rows.append(row)
    return rows, damaged


def write_metrics(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Replace a metrics file atomically (used when resuming drops rows past a checkpoint)."""
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows)
    atomic_write_text(path, text)


def read_run(run_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """(config, metrics rows, summary or None) of one run directory."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory: {CONFIG} is missing")
    summary_path = run_dir / SUMMARY
    summary = read_json(summary_path) if summary_path.exists() else None
    return read_json(cfg_path), read_metrics(run_dir / METRICS), summary


# ---------------------------------------------------------------------------
# one writer per run directory

LOCK = ".lock"


class RunDirBusy(RuntimeError):
    """Another live process holds a run directory's lock; the message names its pid."""


class RunLock:
    """An exclusive lock on a run directory, held by the one process that writes it.

    `fcntl.flock` on DIR/.lock: the kernel releases it when the holder exits, however it
    exits (kill -9 included), so a dead writer never wedges a directory and a lock file
    left behind means nothing by itself. The holder writes its pid into the file so that
    a refused writer, or `sweep status`, can name it. POSIX only (the trainer's platforms).
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = lock_holder(self.path.parent)
            who = f"process {holder}" if holder else "another process"
            raise RunDirBusy(f"run directory {str(self.path.parent)!r} is being written by {who}; "
                             f"wait for it to finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(run_dir: str | Path) -> int | None:
    """The pid of the live process holding DIR's lock, or None when nobody holds it."""
    import fcntl
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
