"""Progress display of the local executor: a rich live table on a TTY, plain lines otherwise.

Both are driven from the executor's single polling thread (`update`, `event`); the rich
display is refreshed by hand, never by a background thread (see sweeps/local.py).
"""
from __future__ import annotations

import sys
import time

from sweeps.expand import PlannedRun


def _eta(runs: dict[str, PlannedRun], out, workers: dict, t0: float) -> float | None:
    """Seconds left: remaining FLOPs over the FLOP rate of the runs finished so far."""
    done = [rid for rid, s in out.state.items() if s in ("completed", "diverged") and rid in out.wall]
    if not done:
        return None
    rate = sum(runs[r].flops for r in done) / max(sum(out.wall[r] for r in done), 1e-9)  # FLOP/s per worker
    left = sum(runs[r].flops for r, s in out.state.items() if s in ("pending", "running"))
    return left / rate / max(len(workers), 1)


def _counts(out) -> dict:
    c = {"completed": 0, "diverged": 0, "failed": 0, "running": 0, "pending": 0}
    for s in out.state.values():
        c[s] = c.get(s, 0) + 1
    return c


class PlainProgress:
    """One line per event (start, finish, failure); nothing else. For logs and CI."""

    def __init__(self, runs: list[PlannedRun], stream=None, quiet: bool = False):
        self.runs = {r.run_id: r for r in runs}
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.t0 = time.monotonic()
        self.out = None

    def event(self, run: PlannedRun, what: str) -> None:
        if self.quiet:
            return
        c = _counts(self.out) if self.out else {}
        done = c.get("completed", 0) + c.get("diverged", 0)
        print(f"[{done}/{len(self.runs)} done, {c.get('failed', 0)} failed] {run.run_id}: {what}",
              file=self.stream, flush=True)

    def update(self, out, workers: dict) -> None:
        self.out = out

    def close(self) -> None:
        pass


class RichProgress(PlainProgress):
    """A live table: counts, ETA, and one line per running worker."""

    def __init__(self, runs: list[PlannedRun]):
        super().__init__(runs)
        from rich.console import Console
        from rich.live import Live
        self.console = Console()
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def event(self, run: PlannedRun, what: str) -> None:
        self.console.print(f"{run.run_id}: {what}")

    def update(self, out, workers: dict) -> None:
        from rich.table import Table
        self.out = out
        c = _counts(out)
        eta = _eta(self.runs, out, workers, self.t0)
        t = Table(title=(f"{c['completed']}/{len(self.runs)} done · {c['running']} running · {c['pending']} pending"
                         f" · {c['failed']} failed · {c['diverged']} diverged"
                         + (f" · ETA {eta / 60:.1f} min" if eta is not None else "")), expand=False)
        for col in ("slot", "run", "shape", "tokens", "elapsed"):
            t.add_column(col)
        for slot, w in sorted(workers.items()):
            t.add_row(str(slot), w.run.run_id, w.run.shape(), f"{w.run.tokens:,}",
                      f"{time.monotonic() - w.started:.0f}s")
        self.live.update(t, refresh=True)

    def close(self) -> None:
        self.live.stop()


def make_progress(runs: list[PlannedRun], quiet: bool = False):
    if not quiet and sys.stdout.isatty():
        return RichProgress(runs)
    return PlainProgress(runs, quiet=quiet)
