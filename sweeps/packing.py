"""Which runs of a sweep can be trained together as one packed computation (torch-free).

Which configs may share a pack is the trainer's rule (`train.packable`); this module
groups a sweep's runs into packs by it and builds the command that trains a pack.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Sequence

from train.config import RunConfig
from train.packable import check_packable, pack_fields  # noqa: F401  (check_packable: re-exported)

if TYPE_CHECKING:  # pragma: no cover
    from sweeps.expand import PlannedRun
    from sweeps.sweepdir import SweepDir


def group_compatible(cfgs: Sequence[RunConfig], k: int) -> list[list[int]]:
    """Split run configs into packs of at most `k` mutually compatible runs.

    Returns lists of indices into `cfgs`, covering each index exactly once.
    Groups keep the order in which their first member appears; within a group,
    runs are sorted by step count so that runs of similar length share a pack
    (a pack runs as long as its longest member). Branched runs
    (`train.init_from`) and non-GPT models always form packs of one.
    """
    if k < 1:
        raise ValueError(f"pack size must be >= 1, got {k}")
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, c in enumerate(cfgs):
        solo = bool(c.train.init_from) or c.model.kind != "gpt"
        key = ("solo", i) if solo else repr(sorted(pack_fields(c).items()))
        groups[key].append(i)
    packs: list[list[int]] = []
    for members in groups.values():
        members = sorted(members, key=lambda i: cfgs[i].steps)
        packs += [members[j:j + k] for j in range(0, len(members), k)]
    return packs


# ---------------------------------------------------------------------------
# the sweep executor's hook (`testbed sweep run ... --pack K`)

def plan_packs(runs: Sequence["PlannedRun"], k: int) -> list[list["PlannedRun"]]:
    """Group a sweep's runs into packs of at most `k`; WSD branches (they start from a
    parent's checkpoint) train on their own. Every run appears in exactly one pack."""
    branches = [r for r in runs if r.parent]
    plain = [r for r in runs if not r.parent]
    packs = [[plain[i] for i in p] for p in group_compatible([r.config for r in plain], k)]
    return packs + [[r] for r in branches]


def pack_command(sd: "SweepDir", members: Sequence["PlannedRun"], python: str = "") -> list[str]:
    """The command that trains (or resumes) a pack: `python -m train --run CONFIG DIR ...`.
    A pack of one is an ordinary run (the sweep directory's own command)."""
    if len(members) == 1:
        return sd.command(members[0], python)
    cmd = [python or sys.executable, "-m", "train"]
    for r in members:
        cmd += ["--run", str(sd.config_file(r.run_id).resolve()), str(sd.run_dir(r.run_id).resolve())]
    return cmd
