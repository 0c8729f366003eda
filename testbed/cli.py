"""`testbed <command> ...`: dispatches to each package's own command line.

Imports are lazy so that `testbed fit` works without torch installed.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import sys

# command -> (module, function, one-line help)
COMMANDS = {
    "train": ("train.cli", "main", "train one run into a run directory"),
    "sweep": ("sweeps.cli", "main", "plan, run and inspect sweeps (plan | run | status)"),
    "fit": ("analysis.cli", "fit_main", "fit a scaling law to a sweep directory or a table"),
    "predict": ("analysis.cli", "predict_main", "predict loss from a fit JSON"),
    "backtest": ("analysis.cli", "backtest_main", "leave-largest-out backtest of laws"),
    "report": ("analysis.cli", "report_main", "write a Markdown report with plots"),
    "demo": ("testbed.demo", "main", "ladder -> fit -> forecast -> train the target -> check"),
    "lr-rule": ("testbed.lrrule", "main", "measure a preset's per-size LR rule on your data (LR sweeps)"),
    "coordcheck": ("train.coordcheck", "main", "muP coordinate check: activation scale vs width"),
}


def usage() -> str:
    lines = ["usage: testbed <command> [args...] | testbed --version", "", "commands:"]
    lines += [f"  {name:<11} {helptext}" for name, (_, _, helptext) in COMMANDS.items()]
    lines += ["", "`testbed <command> --help` shows a command's options."]
    return "\n".join(lines)


def version() -> str:
    try:
        return importlib.metadata.version("scaling-testbed")
    except importlib.metadata.PackageNotFoundError:   # run from a checkout without installing it
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    try:
        rc = _dispatch(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()    # inside the try: a pipe closed early fails here, not at exit
    except BrokenPipeError:   # `testbed ... | head` closed the pipe: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit
        return 0
    return rc


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"testbed (scaling-testbed) {version()}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"testbed: unknown command {name!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = e.name or "?"
        print(f"testbed {name}: missing dependency {missing!r}; install it (pip install -e .) and retry", file=sys.stderr)
        return 2
    return int(getattr(mod, func)(rest) or 0)
