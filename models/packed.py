"""K GPTs of one shape as one module with stacked weights (a leading K dimension).

Sweeps train many tiny models; one tiny model leaves a GPU idle between kernel
launches. Stacking K models of the same ModelConfig turns each of their matmuls
into one batched matmul (`torch.bmm`) and their attention into one call with
K x B sequences, so K runs cost about as many kernel launches as one (Wang et
al. 2021, "Horizontally Fused Training Array", report up to 15x).

Every parameter of `models.gpt.GPT` named `n` with shape S appears here under
the same name with shape (K, *S), so state dicts convert by stacking and
slicing: `PackedGPT.from_models([m1, ..., mK])` / `.to_models()`. The blocks are
gpt.py's own `Block`, built from `PackedLayers` (stacked linears and norms) instead
of torch's; activations are (K, B, T, C), and attention folds K into the batch.
Tests compare the pack with K single models for every variant.

Why a hand-stacked module rather than `torch.func.stack_module_state` + `vmap`
over the GPT itself: vmap has no batching rule for the fused attention kernels
(`_scaled_dot_product_flash_attention_for_cpu` falls back to a per-model loop,
with a warning), which gives up exactly the fusion packing is for, and it
measured slower than this module in every row of benchmarks/README.md
("Packed training"). Here the attention simply folds K into the batch dimension.

Shapes in names: K models, B batch, T time, N = B*T, C width, V vocabulary,
Vp padded vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models import common
from models.config import ModelConfig
from models.gpt import GPT, Block, Layers, add_rope_tables


def _stacked(k: int, *shape: int) -> nn.Parameter:
    # values are always overwritten by from_models; empty keeps construction cheap
    return nn.Parameter(torch.empty(k, *shape))


class PackedLinear(nn.Module):
    """K independent `nn.Linear`s: weight (K, out, in), bias (K, out)."""

    def __init__(self, k: int, fan_in: int, fan_out: int, bias: bool):
        super().__init__()
        self.weight = _stacked(k, fan_out, fan_in)
        self.bias = _stacked(k, fan_out) if bias else None

    def forward(self, x_KxBxTxI: torch.Tensor) -> torch.Tensor:
        K, B, T, _ = x_KxBxTxI.shape
        x_KxNxI = x_KxBxTxI.reshape(K, B * T, -1)
        if self.bias is None:
            y_KxNxO = torch.bmm(x_KxNxI, self.weight.mT)
        else:
            y_KxNxO = torch.baddbmm(self.bias.unsqueeze(1), x_KxNxI, self.weight.mT)
        return y_KxNxO.view(K, B, T, -1)


class PackedNorm(nn.Module):
    """K LayerNorms or RMSNorms over the last dim, with per-model gains (and shifts)."""

    def __init__(self, k: int, template: nn.Module):
        super().__init__()
        self.rms = isinstance(template, nn.RMSNorm)
        self.shape = tuple(template.normalized_shape)
        self.eps = template.eps
        self.weight = _stacked(k, *self.shape)
        self.bias = _stacked(k, *self.shape) if getattr(template, "bias", None) is not None else None

    def forward(self, x_KxBxTxC: torch.Tensor) -> torch.Tensor:
        if self.rms:
            y = F.rms_norm(x_KxBxTxC, self.shape, eps=self.eps)
        else:
            y = F.layer_norm(x_KxBxTxC, self.shape, eps=self.eps)
        y = y * self.weight[:, None, None]
        return y if self.bias is None else y + self.bias[:, None, None]


class PackedEmbedding(nn.Module):
    """K embedding tables (K, rows, C); lookups offset each model into one (K*rows, C) table."""

    def __init__(self, k: int, rows: int, width: int):
        super().__init__()
        self.weight = _stacked(k, rows, width)

    def forward(self, idx_KxBxT: torch.Tensor) -> torch.Tensor:
        k, rows, width = self.weight.shape
        offset_Kx1x1 = torch.arange(k, device=idx_KxBxT.device).view(k, 1, 1) * rows
        return F.embedding(idx_KxBxT + offset_Kx1x1, self.weight.reshape(k * rows, width))


class PackedLayers(Layers):
    """The layer factory that makes `models.gpt.Block` hold K stacked models."""

    def __init__(self, k: int):
        self.k = k

    def linear(self, fan_in: int, fan_out: int, bias: bool) -> nn.Module:
        return PackedLinear(self.k, fan_in, fan_out, bias)

    def norm(self, cfg: ModelConfig) -> nn.Module:
        with torch.device("meta"):   # the single model's norm supplies its kind and eps
            template = common.make_norm(cfg)
        return PackedNorm(self.k, template)


class PackedGPT(nn.Module):
    """K GPTs of one config. `forward(idx) -> (logits_KxBxTxV, None)`, idx (K, B, T) or shared (B, T)."""

    def __init__(self, cfg: ModelConfig, k: int):
        super().__init__()
        cfg.validate()
        if cfg.kind != "gpt":
            raise ValueError(f"packing supports model.kind=gpt only, got {cfg.kind!r}")
        if k < 1:
            raise ValueError(f"a pack needs at least one model, got {k}")
        self.config, self.k = cfg, k
        self.wte = PackedEmbedding(k, cfg.padded_vocab, cfg.width)
        self.wpe = PackedEmbedding(k, cfg.context, cfg.width) if cfg.pos == "learned" else None
        add_rope_tables(self, cfg)
        layers = PackedLayers(k)
        self.blocks = nn.ModuleList(Block(cfg, layers) for _ in range(cfg.depth))   # gpt.py's own Block
        self.norm_f = layers.norm(cfg)
        self.head = None if cfg.tie_embeddings else PackedLinear(k, cfg.width, cfg.padded_vocab, bias=False)
        self.output_mult = 1.0 / common.width_mult(cfg)   # as GPT: muP readout multiplier

    # ---- conversions -------------------------------------------------
    @classmethod
    def from_models(cls, models: list[nn.Module]) -> "PackedGPT":
        """Stack K GPTs built from one ModelConfig (on their device) into one packed module."""
        if not models:
            raise ValueError("from_models needs at least one model")
        cfg = models[0].config
        for i, m in enumerate(models[1:], start=1):
            if m.config != cfg:
                raise ValueError(f"model {i} has a different ModelConfig than model 0; packed models share one shape")
        ref = models[0].wte.weight
        packed = cls(cfg, len(models)).to(device=ref.device, dtype=ref.dtype)
        states = [m.state_dict() for m in models]
        packed.load_state_dict({n: torch.stack([s[n] for s in states]) for n in states[0]})
        return packed

    def select(self, keep: list[int]) -> "PackedGPT":
        """A smaller pack holding copies of models `keep` (in that order)."""
        ref = self.wte.weight
        packed = PackedGPT(self.config, len(keep)).to(device=ref.device, dtype=ref.dtype)
        packed.load_state_dict({n: t[keep] for n, t in self.state_dict().items()})
        return packed

    def model_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """The i-th model's state dict, in `GPT.state_dict()` layout (copies, not views)."""
        return {n: t[i].clone() for n, t in self.state_dict().items()}

    def to_models(self) -> list[nn.Module]:
        """K ordinary GPTs holding copies of the packed weights."""
        ref = self.wte.weight
        out = []
        for i in range(self.k):
            m = GPT(self.config).to(device=ref.device, dtype=ref.dtype)
            m.load_state_dict(self.model_state_dict(i))
            out.append(m)
        return out

    # ---- forward -----------------------------------------------------
    def forward(self, idx: torch.Tensor, state=None) -> tuple[torch.Tensor, None]:
        K = self.k
        if idx.ndim == 2:   # one batch shared by all models (they train on the same data)
            idx = idx.unsqueeze(0).expand(K, *idx.shape)
        if idx.ndim != 3 or idx.shape[0] != K:
            raise ValueError(f"idx must be (K={K}, B, T) or (B, T), got shape {tuple(idx.shape)}")
        _, B, T = idx.shape
        if T > self.config.context:
            raise ValueError(f"sequence length {T} exceeds model.context={self.config.context}")
        x_KxBxTxC = self.wte(idx)
        if self.wpe is not None:
            x_KxBxTxC = x_KxBxTxC + self.wpe.weight[:, None, :T]
        for block in self.blocks:
            x_KxBxTxC = block(x_KxBxTxC, self.rope_cos, self.rope_sin)
        x_KxNxC = self.norm_f(x_KxBxTxC).view(K, B * T, -1)
        weight_KxVpxC = self.wte.weight if self.head is None else self.head.weight
        logits_KxNxVp = torch.bmm(x_KxNxC, weight_KxVpxC.mT)
        if self.output_mult != 1.0:
            logits_KxNxVp = logits_KxNxVp * self.output_mult
        return logits_KxNxVp.view(K, B, T, -1)[..., : self.config.vocab_size], None
