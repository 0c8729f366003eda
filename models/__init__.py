"""GPT and LSTM language models behind one interface, with their counts.

Importing this package does not import torch: `models.config`,
`models.counting` and `models.shapes` serve sweeps and analysis without a
deep-learning stack. `build_model` imports the torch modules when called.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from models.config import ModelConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch


def build_model(cfg: ModelConfig) -> "torch.nn.Module":
    """The model for `cfg` (validated; cfg.vocab_size must be > 0).

    `model(idx_BxT, state=None) -> (logits_BxTxV, state)`; `model.config` is cfg;
    `model.param_groups(weight_decay, exclude_from_decay)` gives AdamW groups with "lr_mult".
    """
    cfg.validate()
    if cfg.vocab_size <= 0:
        raise ValueError("model.vocab_size must be set (> 0) before building a model")
    if cfg.kind == "gpt":
        from models.gpt import GPT
        return GPT(cfg)
    from models.lstm import LSTMLM
    return LSTMLM(cfg)


__all__ = ["ModelConfig", "build_model"]
