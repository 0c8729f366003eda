"""The mutations `benchmarks/mutation_check.py` applies: one break of product code each.

`old` must occur exactly once in `file`; `tests` are the pytest selections that claim to
cover that code. Keep each mutation small and realistic: the kind of slip a refactor makes.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    old: str
    new: str
    breaks: str
    tests: tuple[str, ...]


MUTATIONS: list[Mutation] = [
    Mutation("eval_steps_drop_last", "train/contract.py",
             "return sorted(set(steps.tolist()) | {total_steps})", "return sorted(set(steps.tolist()))",
             "the final step is no longer an eval point", ("tests/test_train.py", "tests/test_analysis_cli.py")),
]
