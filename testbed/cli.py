"""`testbed <command> ...`: dispatches to each package's own command line.

Imports are lazy so that `testbed fit` works without torch installed.
"""
from __future__ import annotations

import importlib
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
    "coordcheck": ("train.coordcheck", "main", "muP coordinate check: activation scale vs width"),
}


def usage() -> str:
    lines = ["usage: testbed <command> [args...]", "", "commands:"]
    lines += [f"  {name:<11} {helptext}" for name, (_, _, helptext) in COMMANDS.items()]
    lines += ["", "`testbed <command> --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"testbed: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = e.name or "?"
        print(f"testbed {name}: missing dependency {missing!r}; install it (pip install -e .) and retry", file=sys.stderr)
        return 2
    rc = getattr(mod, func)(rest)
    return int(rc or 0)
