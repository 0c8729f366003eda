"""Which run configs can train together as one packed computation (torch-free).

`train.packed.train_packed` stacks K models of one shape into batched weights and
feeds them the same batches. That is exact only when the runs share everything that
decides the computation graph and the data stream; they may differ in what is
per-model arithmetic: seed (init), optimizer hyperparameters, LR schedule, gradient
clipping, token budget (a shorter run simply stops being updated), eval points and
bookkeeping (name, logging, checkpoints, FLOP convention, divergence threshold).
The sweep tools group a sweep's runs into packs with these rules (sweeps/packing.py).
"""
from __future__ import annotations

from typing import Any, Sequence

from train.config import ConfigError, RunConfig, flatten, to_dict

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
