"""`testbed train` (also `python -m train`): train one run, or several as one packed computation.

    testbed train [CONFIG.yaml|.json] [key=value ...] [--out RUN_DIR]
    testbed train --run CONFIG RUN_DIR --run CONFIG RUN_DIR ... [key=value ...]

Exit codes (train/contract.py): 0 completed, 1 failed, 2 bad input (config, flag, or a run
directory that is busy or holds another run), 3 diverged, 4 disk full, 5 out of device memory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from train.config import ConfigError, load_config
from train.contract import (EXIT_BAD_INPUT, EXIT_BY_STATUS, EXIT_FAILED, EXIT_NO_SPACE, EXIT_OK,
                            EXIT_OUT_OF_MEMORY, FAILED)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="testbed train",
        description="Train one run into a run directory (resumes when the directory holds the same config); "
                    "with several --run, train them as one packed computation (runs of one model shape).",
        epilog="Config keys: `testbed train --print-config` prints every key with its default "
               "(add a CONFIG file or key=value overrides to see them resolved). "
               "Example: testbed train --out runs/tiny model.width=64 train.tokens=200000 optim.lr=3e-3")
    p.add_argument("args", nargs="*", metavar="[CONFIG] key=value",
                   help="an optional YAML/JSON config file, then dotted overrides such as optim.lr=3e-3 "
                        "(with --run: overrides applied to every run)")
    p.add_argument("--out", help="run directory (default: runs/<run_id>)")
    p.add_argument("--run", nargs=2, action="append", metavar=("CONFIG", "RUN_DIR"),
                   help="a run config file and its run directory; repeat to pack several runs into one process")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def _split(args: list[str]) -> tuple[str | None, list[str]]:
    if args and "=" not in args[0]:
        return args[0], args[1:]
    stray = [a for a in args[1:] if "=" not in a]
    if stray:
        raise ConfigError(f"{stray[0]!r} is not a key=value override (the config file comes first)")
    return None, args


def _progress_printer(quiet: bool) -> Any:
    """One line per eval on a terminal (rich), nothing when piped or --quiet."""
    if quiet or not sys.stdout.isatty():
        return None
    from rich.console import Console
    console = Console()

    def show(r: dict[str, Any]) -> None:
        loss = f"{r['loss']:.4f}" if r.get("loss") is not None else "-"
        val = f"{r['val_loss']:.4f}" if r.get("val_loss") is not None else "nan"
        console.print(f"step {r['step']:>6}/{r['total_steps']}  tokens {r['tokens']:.3g}  "
                      f"lr {r['lr']:.3g}  loss {loss}  [bold]val {val}[/]  {r['time_s']:.1f}s")
    return show


def _print(text: str) -> None:
    """Print to stdout; a reader that stopped early (`| head`) is not an error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python's documented recipe: point stdout at devnull so the exit-time flush is silent
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _exit_code(e: BaseException) -> int | None:
    """The exit code of an error that has its own (None: an ordinary failure)."""
    import train.rundir as rundir
    if isinstance(e, (ConfigError, rundir.RunDirBusy)):
        return EXIT_BAD_INPUT
    if rundir.is_no_space(e):
        return EXIT_NO_SPACE
    if type(e).__name__ == "OutOfMemoryError":   # torch.OutOfMemoryError, without importing torch here
        return EXIT_OUT_OF_MEMORY
    return None


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    try:
        if ns.run:
            if ns.out or ns.print_config or (ns.args and "=" not in ns.args[0]):
                raise ConfigError("with --run CONFIG RUN_DIR, give only key=value overrides (no CONFIG, --out or --print-config)")
            return _train_runs(ns)
        path, overrides = _split(ns.args)
        cfg = load_config(path, overrides).resolved()
        if ns.print_config:
            _print(json.dumps(cfg.to_dict(), indent=2))
            return EXIT_OK
        from train.api import train_run
        from train.ddp import env_info

        out = ns.out or f"runs/{cfg.run_id()}"
        summary = train_run(cfg, out, progress=_progress_printer(ns.quiet))
    except Exception as e:
        code = _exit_code(e)
        if code == EXIT_BAD_INPUT:
            print(f"{'config error' if isinstance(e, ConfigError) else 'refused'}: {e}", file=sys.stderr)
        elif code == EXIT_OUT_OF_MEMORY:
            print(f"run stopped: out of device memory even at one sequence per micro-batch ({e}); "
                  f"a smaller model or context, or a device with more memory, is needed", file=sys.stderr)
        elif code is not None:
            print(f"run stopped: {e}", file=sys.stderr)
        else:  # the summary already records it; say it once, plainly
            print(f"run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED if code is None else code
    status = summary.get("status", FAILED)
    if env_info().is_main and not ns.quiet:
        val = summary.get("final_val_loss")
        _print(f"{status}: {summary.get('run_id')} steps {summary.get('steps')} "
               f"val_loss {val if val is None else round(val, 4)} -> {out}")
    if status == "diverged":
        print(f"diverged: {summary.get('error', '')}", file=sys.stderr)
    return EXIT_BY_STATUS.get(status, EXIT_FAILED)


def _train_runs(ns: argparse.Namespace) -> int:
    """`--run CONFIG RUN_DIR ...`: one run as `train_run`, several as one pack. Exit 1 when any
    failed, else the worst status's code (3 when some diverged)."""
    cfgs = [load_config(path, ns.args) for path, _ in ns.run]
    outs = [out for _, out in ns.run]
    if len(cfgs) == 1:
        from train.api import train_run
        summaries = [train_run(cfgs[0], outs[0])]
    else:
        from train.packed import train_packed
        summaries = train_packed(cfgs, outs)
    statuses = [s.get("status", FAILED) for s in summaries]
    if not ns.quiet:
        for out, s in zip(outs, summaries):
            _print(f"{s.get('status')}: {s.get('run_id')} steps {s.get('steps')} val_loss {s.get('final_val_loss')} -> {out}")
    if FAILED in statuses:
        return EXIT_FAILED
    return max(EXIT_BY_STATUS.get(s, EXIT_FAILED) for s in statuses)
