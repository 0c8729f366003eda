"""Progress of a token-cache build: a rich bar on a terminal, a few plain lines otherwise.

Tokenizing a corpus for the first time takes minutes; silence for that long reads as a
hang. On a terminal (stderr) a bar shows documents done, tokens/s and the time left;
in a log, one line per stage and one every `PLAIN_EVERY_S` seconds. Each stage ends with
one line stating its rate.
"""
from __future__ import annotations

import sys
import time

PLAIN_EVERY_S = 15.0


class BuildProgress:
    def __init__(self, label: str, stream=None, enabled: bool = True):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._rich = None
        self._task = None
        self._t0 = self._last = 0.0
        self._done = self._tokens = self._total = 0
        self._what = ""

    def say(self, text: str) -> None:
        if self.enabled:
            print(f"{self.label}: {text}", file=self.stream, flush=True)

    def start(self, what: str, total: int) -> None:
        """A stage of `total` documents begins."""
        self._what, self._total = what, total
        self._done = self._tokens = 0
        self._t0 = self._last = time.perf_counter()
        if not self.enabled:
            return
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)
            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("docs · {task.fields[rate]}"), TimeElapsedColumn(),
                                  TimeRemainingColumn(), console=Console(file=self.stream), transient=True)
            self._rich.start()
            self._task = self._rich.add_task(f"{self.label}: {what}", total=total, rate="")
        else:
            self.say(f"{what}: {total:,} documents ...")

    def advance(self, docs: int, tokens: int) -> None:
        self._done += docs
        self._tokens += tokens
        if not self.enabled:
            return
        now = time.perf_counter()
        rate = self._tokens / max(now - self._t0, 1e-9)
        if self._rich is not None:
            self._rich.update(self._task, advance=docs, rate=f"{rate / 1e3:,.0f}k tokens/s")
        elif now - self._last >= PLAIN_EVERY_S:
            self._last = now
            self.say(f"{self._what}: {self._done:,}/{self._total:,} documents, {self._tokens:,} tokens "
                     f"({rate / 1e3:,.0f}k tokens/s)")

    def finish(self) -> None:
        sec = time.perf_counter() - self._t0
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        self.say(f"{self._what}: {self._done:,} documents, {self._tokens:,} tokens in {sec:.1f} s "
                 f"({self._tokens / max(sec, 1e-9) / 1e3:,.0f}k tokens/s)")
