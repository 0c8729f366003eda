"""Pieces both models share: the norm layer, muP width multipliers, AdamW groups.

Every parameter has a role, and the role alone decides weight decay and the
per-group LR multiplier:

  embedding  token / position tables (and the output head when tied)
  readout    the untied output head
  hidden     matrices whose fan-in grows with width (attention, MLP, LSTM gates)
  vector     norm gains and biases

Under muP we use the formulation of Yang et al. 2022 ("Tensor Programs V",
Table 8, the form the `mup` package implements; equivalent to Table 3), with
m = width / base_width:

  input embeddings, biases, norm gains   init unchanged, Adam LR multiplier 1
  hidden matrices                        init variance / m (so proportional to 1/fan_in), Adam LR multiplier 1/m
  readout (tied or untied)               init unchanged, Adam LR multiplier 1, output multiplier 1/m (gpt.py)

Because the input and output weights follow the same init/LR rule in this
form, a tied embedding is allowed under muP (Table 3's caption points to
Table 8 as the form compatible with input/output weight sharing). At m = 1
every rule is the SP one.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from models.config import ModelConfig

ROLES = ("embedding", "readout", "hidden", "vector")


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.width, bias=cfg.bias)
    return nn.RMSNorm(cfg.width)


def width_mult(cfg: ModelConfig) -> float:
    """muP width multiplier m = width / base_width (1 under SP)."""
    return cfg.width / cfg.mup_base_width if cfg.parametrization == "mup" else 1.0


def lr_mult(cfg: ModelConfig, role: str) -> float:
    return 1.0 / width_mult(cfg) if role == "hidden" else 1.0


def decays(role: str, exclude_from_decay: bool) -> bool:
    """Decay matrices; with exclusion, norms, biases and embeddings (incl. a tied head) are not decayed."""
    if not exclude_from_decay:
        return True
    return role in ("hidden", "readout")


def param_groups(cfg: ModelConfig, named_roles: Iterable[tuple[str, nn.Parameter, str]],
                 weight_decay: float, exclude_from_decay: bool) -> list[dict]:
    """AdamW groups keyed by (weight decay, LR multiplier); empty groups are dropped."""
    groups: dict[tuple[float, float], dict] = {}
    seen: set[int] = set()
    for name, p, role in named_roles:
        if role not in ROLES:
            raise ValueError(f"parameter {name} has unknown role {role!r}")
        if id(p) in seen:       # a tied head shares the embedding tensor: one entry only
            continue
        seen.add(id(p))
        wd = weight_decay if decays(role, exclude_from_decay) else 0.0
        mult = lr_mult(cfg, role)
        g = groups.setdefault((wd, mult), {"params": [], "names": [], "weight_decay": wd, "lr_mult": mult})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def named_roles(model: nn.Module, embedding_prefixes: tuple[str, ...]) -> list[tuple[str, nn.Parameter, str]]:
    """Each parameter's muP/decay role: embedding tables, the readout (`head.`), hidden matrices, vectors."""
    out = []
    for name, p in model.named_parameters():
        if name.startswith(embedding_prefixes):
            role = "embedding"
        elif name.startswith("head."):
            role = "readout"
        elif p.ndim >= 2:
            role = "hidden"
        else:
            role = "vector"
        out.append((name, p, role))
    return out


def check_roles_cover(model: nn.Module, named_roles: list[tuple[str, nn.Parameter, str]]) -> None:
    """Every trainable parameter must have exactly one role (guards against a new layer slipping through)."""
    have = {id(p) for _, p, _ in named_roles}
    missing = [n for n, p in model.named_parameters() if id(p) not in have]
    if missing:
        raise RuntimeError(f"parameters without a role: {missing}")


@torch.no_grad()
def init_normal(t: torch.Tensor, std: float) -> None:
    nn.init.normal_(t, mean=0.0, std=std)
