"""`python -m train [CONFIG.yaml|.json] --out RUN_DIR key=value ...` (also `testbed train ...`).

Exit codes: 0 completed, 1 failed, 2 config error, 3 diverged.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from train.config import ConfigError, load_config
from train.contract import EXIT_BY_STATUS as EXIT

CONFIG_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train one run into a run directory (resumes when the directory holds the same config).",
        epilog="example: python -m train --out runs/tiny model.width=64 train.tokens=200000 optim.lr=3e-3")
    p.add_argument("args", nargs="*", metavar="[CONFIG] key=value",
                   help="an optional YAML/JSON config file, then dotted overrides such as optim.lr=3e-3")
    p.add_argument("--out", help="run directory (default: runs/<run_id>)")
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


def main(argv: list[str] | None = None) -> int:
    ns = _parser().parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    try:
        path, overrides = _split(ns.args)
        cfg = load_config(path, overrides).resolved()
        if ns.print_config:
            print(json.dumps(cfg.to_dict(), indent=2))
            return 0
        from train.api import train_run
        from train.ddp import env_info

        summary = train_run(cfg, ns.out or f"runs/{cfg.run_id()}", progress=_progress_printer(ns.quiet))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return CONFIG_ERROR
    except Exception as e:  # the summary already records it; say it once, plainly
        print(f"run failed: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT["failed"]
    status = summary.get("status", "failed")
    if env_info().is_main and not ns.quiet:
        val = summary.get("final_val_loss")
        print(f"{status}: {summary.get('run_id')} steps {summary.get('steps')} "
              f"val_loss {val if val is None else round(val, 4)} -> {ns.out or 'runs/' + cfg.run_id()}")
    if status == "diverged":
        print(f"diverged: {summary.get('error', '')}", file=sys.stderr)
    return EXIT.get(status, 1)
