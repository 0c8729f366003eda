"""Does the test suite catch the breaks that matter? A small mutation check.

Each mutation in `benchmarks/mutations.py` replaces one exact piece of product code
(it must occur exactly once in its file) with a broken version. For every mutation the
repository's tracked files are copied to a temporary directory, the mutation is applied
there, and the tests that claim to cover that code run against the copy (PYTHONPATH
points at the copy, so subprocesses the tests start import the mutated code too). A
mutation the tests do not fail on has *survived*: the suite would not notice that break.

    python benchmarks/mutation_check.py                 # every mutation, its own tests
    python benchmarks/mutation_check.py --only bootstrap_term,resume_rng
    python benchmarks/mutation_check.py --full          # the whole suite per mutation (slow)
    python benchmarks/mutation_check.py --list

Prints a Markdown table (mutation, what it breaks, tests run, caught or survived, seconds)
and exits 1 when a mutation survived or no longer applies (the code it names changed:
update the mutation). Benchmarks never run in CI's test command.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from mutations import MUTATIONS, Mutation  # noqa: E402  (a sibling module, found through the path above)


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [p for p in out.stdout.splitlines() if p and (ROOT / p).is_file()]


def copy_tree(dest: Path, files: list[str]) -> None:
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    shared = ROOT.parent / "shared"   # tests that read ../shared/data find it beside the copy too
    if shared.is_dir() and not (dest.parent / "shared").exists():
        (dest.parent / "shared").symlink_to(shared)


def apply(m: Mutation, tree: Path) -> str | None:
    """Apply `m` inside `tree`; return why it cannot be applied, or None."""
    path = tree / m.file
    if not path.is_file():
        return f"{m.file} does not exist"
    text = path.read_text()
    count = text.count(m.old)
    if count != 1:
        return f"the code to mutate occurs {count} times in {m.file} (must be exactly once)"
    path.write_text(text.replace(m.old, m.new))
    return None


def run_one(m: Mutation, files: list[str], full: bool, timeout: float) -> dict:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        tree = Path(tmp) / "repo"
        copy_tree(tree, files)
        problem = apply(m, tree)
        if problem:
            return {"name": m.name, "result": f"does not apply: {problem}", "seconds": 0.0, "caught": None}
        tests = ["tests"] if full else list(m.tests)
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
        try:
            proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = -1
    seconds = time.perf_counter() - start
    if rc == 0:
        result, caught = "**survived**", False
    elif rc == 1:
        result, caught = "caught", True
    elif rc == -1:
        result, caught = f"timed out after {timeout:.0f} s", None
    else:
        result, caught = f"pytest exit {rc} (collection or usage error)", None
    return {"name": m.name, "result": result, "seconds": seconds, "caught": caught}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated mutation names")
    ap.add_argument("--full", action="store_true", help="run the whole suite for every mutation")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per mutation")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = ap.parse_args(argv)

    chosen = MUTATIONS
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - {m.name for m in MUTATIONS})
        if unknown:
            print(f"mutation_check: unknown mutation(s) {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        chosen = [m for m in MUTATIONS if m.name in names]
    if args.list:
        for m in chosen:
            print(f"{m.name:32s} {m.file}: {m.breaks}")
        return 0

    files = tracked_files()
    rows = []
    for m in chosen:
        r = run_one(m, files, args.full, args.timeout)
        rows.append((m, r))
        print(f"{m.name}: {r['result']} ({r['seconds']:.0f} s)", file=sys.stderr, flush=True)

    print("| mutation | what it breaks | tests run | result | s |")
    print("|---|---|---|---|---|")
    for m, r in rows:
        tests = "whole suite" if args.full else ", ".join(m.tests)
        print(f"| `{m.name}` | {m.breaks} | {tests} | {r['result']} | {r['seconds']:.0f} |")
    caught = sum(1 for _, r in rows if r["caught"])
    print(f"\n{caught} of {len(rows)} mutations caught.")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
