"""A pre-norm decoder-only transformer (GPT-2 layout) configured by ModelConfig.

Variants: LayerNorm or RMSNorm, learned or rotary positions, GELU or SwiGLU
MLP, tied or untied embeddings, optional biases, SP or muP parametrization.

Shapes in names: B batch, T time, C width (d_model), H heads, D head size,
V vocabulary, Vp padded vocabulary; L the leading dims of a block's input
((B,) for one model, (K, B) for a pack), M their product.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models import common
from models.config import ModelConfig


def rope_tables(context: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (T, D/2) for rotary embeddings (Su et al. 2021, eq. 34)."""
    inv_freq_Dh = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles_TxDh = torch.outer(torch.arange(context, dtype=torch.float64), inv_freq_Dh)
    return angles_TxDh.cos().float(), angles_TxDh.sin().float()


def apply_rope(x_BxHxTxD: torch.Tensor, cos_TxDh: torch.Tensor, sin_TxDh: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+D/2}) by position-dependent angles ("rotate half" layout)."""
    x1, x2 = x_BxHxTxD.chunk(2, dim=-1)
    cos, sin = cos_TxDh.to(x1.dtype), sin_TxDh.to(x1.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def add_rope_tables(module: nn.Module, cfg: ModelConfig) -> None:
    """`module.rope_cos`/`rope_sin`: the rotary tables for pos=rope (else None). Not persistent
    buffers: they are derived from the config, so checkpoints and numel stay clean."""
    if cfg.pos == "rope":
        cos, sin = rope_tables(cfg.context, cfg.width // cfg.n_heads)
        module.register_buffer("rope_cos", cos, persistent=False)
        module.register_buffer("rope_sin", sin, persistent=False)
    else:
        module.rope_cos = module.rope_sin = None


class Layers:
    """The layer factory a Block is built from: ordinary torch layers, one model.

    `models.packed.PackedLayers` makes the same Block hold K stacked models instead;
    the Block's operations (and so its numerics) are the same code for both. The
    creation order below is the order in which modules consume the global RNG at
    construction, so it stays fixed (GPT.reset_parameters re-draws every weight).
    """

    def linear(self, fan_in: int, fan_out: int, bias: bool) -> nn.Module:
        return nn.Linear(fan_in, fan_out, bias=bias)

    def norm(self, cfg: ModelConfig) -> nn.Module:
        return common.make_norm(cfg)


class Attention(nn.Module):
    """Causal self-attention over x (*lead, T, C): every leading dim folds into SDPA's batch."""

    def __init__(self, cfg: ModelConfig, layers: Layers):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.width // cfg.n_heads
        self.qkv = layers.linear(cfg.width, 3 * cfg.width, cfg.bias)
        self.proj = layers.linear(cfg.width, cfg.width, cfg.bias)
        self.rope = cfg.pos == "rope"
        if cfg.parametrization == "mup":
            # muP uses 1/d_head attention (TP5, Sec. 4 and Table 8): q.k grows like d_head once
            # q and k become correlated during training. sqrt(base_D)/D equals 1/sqrt(D) at base width.
            base_head_dim = cfg.mup_base_width // cfg.n_heads if cfg.heads > 0 else self.head_dim
            self.scale = math.sqrt(base_head_dim) / self.head_dim
        else:
            self.scale = 1.0 / math.sqrt(self.head_dim)

    def forward(self, x_LxTxC: torch.Tensor, cos_TxDh=None, sin_TxDh=None) -> torch.Tensor:
        *lead, T, C = x_LxTxC.shape     # lead: (B,) for one model, (K, B) for a pack
        qkv_MxTx3xHxD = self.qkv(x_LxTxC).view(-1, T, 3, self.n_heads, self.head_dim)   # M = prod(lead)
        q_MxHxTxD, k_MxHxTxD, v_MxHxTxD = qkv_MxTx3xHxD.permute(2, 0, 3, 1, 4).unbind(0)
        if self.rope:
            q_MxHxTxD = apply_rope(q_MxHxTxD, cos_TxDh[:T], sin_TxDh[:T])
            k_MxHxTxD = apply_rope(k_MxHxTxD, cos_TxDh[:T], sin_TxDh[:T])
        y_MxHxTxD = F.scaled_dot_product_attention(q_MxHxTxD, k_MxHxTxD, v_MxHxTxD,
                                                   is_causal=True, scale=self.scale)
        return self.proj(y_MxHxTxD.transpose(1, 2).reshape(*lead, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, layers: Layers):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        hidden = cfg.mlp_hidden
        self.up = layers.linear(cfg.width, hidden, cfg.bias)
        if self.swiglu:
            self.gate = layers.linear(cfg.width, hidden, cfg.bias)
        self.proj = layers.linear(hidden, cfg.width, cfg.bias)

    def forward(self, x_LxTxC: torch.Tensor) -> torch.Tensor:
        if self.swiglu:   # Shazeer 2020, "GLU Variants Improve Transformer", eq. 5 (SwiGLU)
            h_LxTxF = F.silu(self.gate(x_LxTxC)) * self.up(x_LxTxC)
        else:
            h_LxTxF = F.gelu(self.up(x_LxTxC))
        return self.proj(h_LxTxF)


class Block(nn.Module):
    """Pre-norm transformer block; its layers come from `layers` (one model, or a pack of K)."""

    def __init__(self, cfg: ModelConfig, layers: Layers | None = None):
        super().__init__()
        layers = layers or Layers()
        self.norm1 = layers.norm(cfg)
        self.attn = Attention(cfg, layers)
        self.norm2 = layers.norm(cfg)
        self.mlp = MLP(cfg, layers)

    def forward(self, x_LxTxC: torch.Tensor, cos_TxDh=None, sin_TxDh=None) -> torch.Tensor:
        x_LxTxC = x_LxTxC + self.attn(self.norm1(x_LxTxC), cos_TxDh, sin_TxDh)
        return x_LxTxC + self.mlp(self.norm2(x_LxTxC))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        if cfg.kind != "gpt":
            raise ValueError(f"GPT needs model.kind=gpt, got {cfg.kind!r}")
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (> 0) before building a model")
        self.config = cfg
        self.wte = nn.Embedding(cfg.padded_vocab, cfg.width)
        self.wpe = nn.Embedding(cfg.context, cfg.width) if cfg.pos == "learned" else None
        add_rope_tables(self, cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm_f = common.make_norm(cfg)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.width, cfg.padded_vocab, bias=False)
        # muP readout multiplier 1/m (TP5 Table 8: output weights have multiplier 1/fan_in, init
        # variance and Adam LR constant): keeps logits O(1) as width grows while the readout LR stays 1.
        self.output_mult = 1.0 / common.width_mult(cfg)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, init_std) everywhere, residual projections scaled by 1/sqrt(2 * depth)
        (Radford et al. 2019, Sec. 2.3). muP: hidden matrices get std / sqrt(m), i.e. variance
        proportional to 1/fan_in and equal to SP at the base width (TP5 Table 8)."""
        cfg = self.config
        std = cfg.init_std
        hidden_std = std / math.sqrt(common.width_mult(cfg))
        common.init_normal(self.wte.weight, std)
        if self.wpe is not None:
            common.init_normal(self.wpe.weight, std)
        for block in self.blocks:
            for lin in (block.attn.qkv, block.mlp.up) + ((block.mlp.gate,) if block.mlp.swiglu else ()):
                common.init_normal(lin.weight, hidden_std)
            for lin in (block.attn.proj, block.mlp.proj):
                common.init_normal(lin.weight, hidden_std / math.sqrt(2 * cfg.depth))
        if self.head is not None:
            common.init_normal(self.head.weight, std)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.zero_()
            if isinstance(m, (nn.LayerNorm, nn.RMSNorm)):
                m.reset_parameters()   # gain 1, shift 0

    def forward(self, idx_BxT: torch.Tensor, state=None) -> tuple[torch.Tensor, None]:
        B, T = idx_BxT.shape
        if T > self.config.context:
            raise ValueError(f"sequence length {T} exceeds model.context={self.config.context}")
        x_BxTxC = self.wte(idx_BxT)
        if self.wpe is not None:
            x_BxTxC = x_BxTxC + self.wpe(torch.arange(T, device=idx_BxT.device))
        for block in self.blocks:
            x_BxTxC = block(x_BxTxC, self.rope_cos, self.rope_sin)
        x_BxTxC = self.norm_f(x_BxTxC)
        weight_VpxC = self.wte.weight if self.head is None else self.head.weight
        logits_BxTxVp = F.linear(x_BxTxC, weight_VpxC)
        if self.output_mult != 1.0:
            logits_BxTxVp = logits_BxTxVp * self.output_mult
        return logits_BxTxVp[..., : self.config.vocab_size], None

    def named_roles(self) -> list[tuple[str, nn.Parameter, str]]:
        return common.named_roles(self, ("wte.", "wpe."))

    def param_groups(self, weight_decay: float, exclude_from_decay: bool) -> list[dict]:
        roles = self.named_roles()
        common.check_roles_cover(self, roles)
        return common.param_groups(self.config, roles, weight_decay, exclude_from_decay)
