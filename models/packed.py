"""K GPTs of one shape as one module with stacked weights (a leading K dimension).

Sweeps train many tiny models; one tiny model leaves a GPU idle between kernel
launches. Stacking K models of the same ModelConfig turns each of their matmuls
into one batched matmul (`torch.bmm`) and their attention into one call with
K x B sequences, so K runs cost about as many kernel launches as one (Wang et
al. 2021, "Horizontally Fused Training Array", report up to 15x).

Every parameter of `models.gpt.GPT` named `n` with shape S appears here under
the same name with shape (K, *S), so state dicts convert by stacking and
slicing: `PackedGPT.from_models([m1, ..., mK])` / `.to_models()`. The forward
mirrors gpt.py operation by operation; tests compare the two for every variant.

Why a hand-stacked module rather than `torch.func.stack_module_state` + `vmap`
over the GPT itself: vmap has no batching rule for the fused attention kernels
(`_scaled_dot_product_flash_attention_for_cpu` falls back to a per-model loop,
with a warning), which gives up exactly the fusion packing is for, and it
measured slower than this module in every row of benchmarks/README.md
("Packed training"). Here the attention simply folds K into the batch dimension.

Shapes in names: K models, B batch, T time, N = B*T, C width, H heads, D head
size, F mlp hidden, V vocabulary, Vp padded vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.gpt import GPT, apply_rope


def _stacked(k: int, *shape: int) -> nn.Parameter:
    # values are always overwritten by from_models; empty keeps construction cheap
    return nn.Parameter(torch.empty(k, *shape))


class PackedLinear(nn.Module):
    """K independent `nn.Linear`s: weight (K, out, in), bias (K, out)."""

    def __init__(self, k: int, fan_in: int, fan_out: int, bias: bool):
        super().__init__()
        self.weight = _stacked(k, fan_out, fan_in)
        self.bias = _stacked(k, fan_out) if bias else None

    def forward(self, x_KxNxI: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x_KxNxI, self.weight.mT)
        return torch.baddbmm(self.bias.unsqueeze(1), x_KxNxI, self.weight.mT)


class PackedNorm(nn.Module):
    """K LayerNorms or RMSNorms over the last dim, with per-model gains (and shifts)."""

    def __init__(self, k: int, template: nn.Module):
        super().__init__()
        self.rms = isinstance(template, nn.RMSNorm)
        self.shape = tuple(template.normalized_shape)
        self.eps = template.eps
        self.weight = _stacked(k, *self.shape)
        self.bias = _stacked(k, *self.shape) if getattr(template, "bias", None) is not None else None

    def forward(self, x_KxNxC: torch.Tensor) -> torch.Tensor:
        if self.rms:
            y = F.rms_norm(x_KxNxC, self.shape, eps=self.eps)
        else:
            y = F.layer_norm(x_KxNxC, self.shape, eps=self.eps)
        y = y * self.weight.unsqueeze(1)
        return y if self.bias is None else y + self.bias.unsqueeze(1)


class PackedEmbedding(nn.Module):
    """K embedding tables (K, rows, C); lookups offset each model into one (K*rows, C) table."""

    def __init__(self, k: int, rows: int, width: int):
        super().__init__()
        self.weight = _stacked(k, rows, width)

    def forward(self, idx_KxN: torch.Tensor) -> torch.Tensor:
        k, rows, width = self.weight.shape
        offset_Kx1 = torch.arange(k, device=idx_KxN.device).unsqueeze(1) * rows
        return F.embedding(idx_KxN + offset_Kx1, self.weight.reshape(k * rows, width))


class PackedAttention(nn.Module):
    def __init__(self, k: int, cfg: ModelConfig, template: nn.Module):
        super().__init__()
        self.n_heads, self.head_dim = template.n_heads, template.head_dim
        self.scale, self.rope = template.scale, template.rope
        self.qkv = PackedLinear(k, cfg.width, 3 * cfg.width, cfg.bias)
        self.proj = PackedLinear(k, cfg.width, cfg.width, cfg.bias)

    def forward(self, x_KxNxC: torch.Tensor, batch: int, cos_TxDh=None, sin_TxDh=None) -> torch.Tensor:
        K, N, C = x_KxNxC.shape
        B, T, H, D = batch, N // batch, self.n_heads, self.head_dim
        # the K models fold into the batch: one attention call for all of them
        qkv = self.qkv(x_KxNxC).view(K * B, T, 3, H, D)
        q_MxHxTxD, k_MxHxTxD, v_MxHxTxD = qkv.permute(2, 0, 3, 1, 4).unbind(0)   # M = K*B
        if self.rope:
            q_MxHxTxD = apply_rope(q_MxHxTxD, cos_TxDh[:T], sin_TxDh[:T])
            k_MxHxTxD = apply_rope(k_MxHxTxD, cos_TxDh[:T], sin_TxDh[:T])
        y_MxHxTxD = F.scaled_dot_product_attention(q_MxHxTxD, k_MxHxTxD, v_MxHxTxD,
                                                   is_causal=True, scale=self.scale)
        return self.proj(y_MxHxTxD.transpose(1, 2).reshape(K, N, C))


class PackedMLP(nn.Module):
    def __init__(self, k: int, cfg: ModelConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.up = PackedLinear(k, cfg.width, cfg.mlp_hidden, cfg.bias)
        if self.swiglu:
            self.gate = PackedLinear(k, cfg.width, cfg.mlp_hidden, cfg.bias)
        self.proj = PackedLinear(k, cfg.mlp_hidden, cfg.width, cfg.bias)

    def forward(self, x_KxNxC: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            h_KxNxF = F.silu(self.gate(x_KxNxC)) * self.up(x_KxNxC)
        else:
            h_KxNxF = F.gelu(self.up(x_KxNxC))
        return self.proj(h_KxNxF)


class PackedBlock(nn.Module):
    def __init__(self, k: int, cfg: ModelConfig, template: nn.Module):
        super().__init__()
        self.norm1 = PackedNorm(k, template.norm1)
        self.attn = PackedAttention(k, cfg, template.attn)
        self.norm2 = PackedNorm(k, template.norm2)
        self.mlp = PackedMLP(k, cfg)

    def forward(self, x_KxNxC: torch.Tensor, batch: int, cos_TxDh=None, sin_TxDh=None) -> torch.Tensor:
        x_KxNxC = x_KxNxC + self.attn(self.norm1(x_KxNxC), batch, cos_TxDh, sin_TxDh)
        return x_KxNxC + self.mlp(self.norm2(x_KxNxC))


class PackedGPT(nn.Module):
    """K GPTs of one config. `forward(idx) -> (logits_KxBxTxV, None)`, idx (K, B, T) or shared (B, T)."""

    def __init__(self, cfg: ModelConfig, k: int):
        super().__init__()
        if cfg.kind != "gpt":
            raise ValueError(f"packing supports model.kind=gpt only, got {cfg.kind!r}")
        if k < 1:
            raise ValueError(f"a pack needs at least one model, got {k}")
        # a meta-device GPT supplies the derived constants (attention scale, norm eps, muP
        # output multiplier) so they are computed in one place, gpt.py
        with torch.device("meta"):
            template = GPT(cfg)
        self.config, self.k = cfg, k
        self.wte = PackedEmbedding(k, cfg.padded_vocab, cfg.width)
        self.wpe = PackedEmbedding(k, cfg.context, cfg.width) if cfg.pos == "learned" else None
        if cfg.pos == "rope":
            from models.gpt import rope_tables
            cos, sin = rope_tables(cfg.context, cfg.width // cfg.n_heads)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None
        self.blocks = nn.ModuleList(PackedBlock(k, cfg, b) for b in template.blocks)
        self.norm_f = PackedNorm(k, template.norm_f)
        self.head = None if cfg.tie_embeddings else PackedLinear(k, cfg.width, cfg.padded_vocab, bias=False)
        self.output_mult = template.output_mult

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
        x_KxNxC = self.wte(idx.reshape(K, B * T))
        if self.wpe is not None:
            pos_T = torch.arange(T, device=idx.device)
            x_KxNxC = (x_KxNxC.view(K, B, T, -1) + self.wpe.weight[:, None, pos_T]).view(K, B * T, -1)
        for block in self.blocks:
            x_KxNxC = block(x_KxNxC, B, self.rope_cos, self.rope_sin)
        x_KxNxC = self.norm_f(x_KxNxC)
        weight_KxVpxC = self.wte.weight if self.head is None else self.head.weight
        logits_KxNxVp = torch.bmm(x_KxNxC, weight_KxVpxC.mT)
        if self.output_mult != 1.0:
            logits_KxNxVp = logits_KxNxVp * self.output_mult
        return logits_KxNxVp.view(K, B, T, -1)[..., : self.config.vocab_size], None
