"""Which runs of a sweep can be trained together as one packed computation (torch-free).

`train.packed.train_packed` stacks K models of one shape into batched weights
and feeds them the same batches. That is exact only when the runs share
everything that decides the computation graph and the data stream; they may
differ in what is per-model arithmetic: seed (init), optimizer hyperparameters,
LR schedule, gradient clipping, token budget (a shorter run simply stops being
updated), eval points and bookkeeping (name, logging, checkpoints, FLOP
convention, divergence threshold).
"""
from __future__ import annotations

import sys
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Sequence

from train.config import ConfigError, RunConfig, flatten, to_dict

if TYPE_CHECKING:  # pragma: no cover
    from sweeps.expand import PlannedRun
    from sweeps.sweepdir import SweepDir

# Whole sections that must be identical: the stacked weights need one shape, and
# every model must see the batches its own run would see (a pure function of the
# data config and the batch index).
SAME_SECTIONS = ("model", "data")
# Single keys that must be identical: batch layout, device/precision, the shared
# validation set, and no branching (init_from starts from another run's state).
SAME_KEYS = (
    "train.batch_tokens",
    "train.micro_batch_tokens",
    "train.device",
    "train.dtype",
    "train.compile",
    "train.threads",
    "train.init_from",
    "eval.tokens",
    "eval.batch_size",
    "optim.name",
)


def pack_fields(cfg: RunConfig) -> dict[str, Any]:
    """The dotted keys (and values) that runs of one pack must share."""
    flat = flatten(to_dict(cfg))
    return {k: v for k, v in flat.items() if k.split(".")[0] in SAME_SECTIONS or k in SAME_KEYS}


def first_difference(a: RunConfig, b: RunConfig) -> str | None:
    """The first dotted key that keeps `a` and `b` out of one pack, or None if they can share one."""
    fa, fb = pack_fields(a), pack_fields(b)
    for k in fa:
        if fa[k] != fb[k]:
            return k
    return None


def check_packable(cfgs: Sequence[RunConfig]) -> None:
    """Raise ConfigError naming the first key on which a config differs from the first one."""
    if not cfgs:
        raise ConfigError("a pack needs at least one run config")
    if cfgs[0].train.init_from:
        raise ConfigError("train.init_from (a branched run) cannot be packed; train it on its own")
    for i, c in enumerate(cfgs[1:], start=1):
        key = first_difference(cfgs[0], c)
        if key is not None:
            fa, fb = pack_fields(cfgs[0]), pack_fields(c)
            raise ConfigError(
                f"runs 0 and {i} cannot be packed: {key} differs ({fa[key]!r} vs {fb[key]!r}); "
                f"packed runs must share model.*, data.* and {', '.join(SAME_KEYS)}")


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
    """The command that trains (or resumes) a pack: `python -m train.packed --run CONFIG DIR ...`.
    A pack of one is an ordinary run (the sweep directory's own command)."""
    if len(members) == 1:
        return sd.command(members[0], python)
    cmd = [python or sys.executable, "-m", "train.packed"]
    for r in members:
        cmd += ["--run", str(sd.config_file(r.run_id).resolve()), str(sd.run_dir(r.run_id).resolve())]
    return cmd
