"""An LSTM language model behind the same interface as GPT.

embedding (Vp x C) -> nn.LSTM(C, C, depth, batch_first) -> final norm -> head.
The embedding width equals the hidden width so the head can be tied.
`forward(idx, state) -> (logits, (h, c))` threads the recurrent state, so a
long sequence can be fed in chunks (truncated BPTT) with identical outputs.

Shapes: B batch, T time, C width, L layers, V vocabulary, Vp padded vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models import common
from models.config import ModelConfig


class LSTMLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        if cfg.kind != "lstm":
            raise ValueError(f"LSTMLM needs model.kind=lstm, got {cfg.kind!r}")
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (> 0) before building a model")
        self.config = cfg
        self.wte = nn.Embedding(cfg.padded_vocab, cfg.width)
        self.lstm = nn.LSTM(cfg.width, cfg.width, cfg.depth, batch_first=True, bias=cfg.bias)
        self.norm_f = common.make_norm(cfg)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.width, cfg.padded_vocab, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, init_std) for embedding and head; gate matrices N(0, 1/sqrt(3C)), the std of
        nn.LSTM's default uniform(+-1/sqrt(C)) init, drawn from our seeded normal; biases zero except the forget gate = 1
        (Jozefowicz et al. 2015, Sec. 2.2: a forget bias of 1 helps gradient flow early on)."""
        cfg = self.config
        common.init_normal(self.wte.weight, cfg.init_std)
        if self.head is not None:
            common.init_normal(self.head.weight, cfg.init_std)
        h = cfg.width
        for name, p in self.lstm.named_parameters():
            if name.startswith("weight"):
                common.init_normal(p, 1.0 / (3 * h) ** 0.5)
            elif name.startswith("bias_ih"):
                p.zero_()
                p[h:2 * h] = 1.0      # gate order i, f, g, o (torch docs)
            else:
                p.zero_()
        self.norm_f.reset_parameters()

    def forward(self, idx_BxT: torch.Tensor, state=None):
        x_BxTxC = self.wte(idx_BxT)
        # The recurrence runs in fp32 even under bf16 autocast: cuDNN's RNN autocast path
        # computes in fp16 with no loss scaling (small gradients underflow, skewing GPT-vs-LSTM
        # comparisons) and oneDNN has no bf16 LSTM on the CPU. Embedding and head stay in bf16.
        with torch.autocast(x_BxTxC.device.type, enabled=False):
            y_BxTxC, (h_LxBxC, c_LxBxC) = self.lstm(x_BxTxC.float(), state)
        y_BxTxC = self.norm_f(y_BxTxC)
        weight_VpxC = self.wte.weight if self.head is None else self.head.weight
        logits_BxTxVp = F.linear(y_BxTxC, weight_VpxC)
        return logits_BxTxVp[..., : self.config.vocab_size], (h_LxBxC, c_LxBxC)

    def named_roles(self) -> list[tuple[str, nn.Parameter, str]]:
        return common.named_roles(self, ("wte.",))

    def param_groups(self, weight_decay: float, exclude_from_decay: bool) -> list[dict]:
        roles = self.named_roles()
        common.check_roles_cover(self, roles)
        return common.param_groups(self.config, roles, weight_decay, exclude_from_decay)
