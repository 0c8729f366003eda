"""Model configuration: one frozen dataclass for every language model the testbed builds.

The config is plain data (no torch import) so that sweeps and analysis can read
parameter and FLOP counts without a deep-learning stack.
"""
from __future__ import annotations

from dataclasses import dataclass

KINDS = ("gpt", "lstm")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
MLPS = ("gelu", "swiglu")
PARAMETRIZATIONS = ("sp", "mup")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "gpt"               # gpt | lstm
    width: int = 128                # d_model (GPT) or hidden size (LSTM)
    depth: int = 2                  # transformer blocks or LSTM layers
    heads: int = 0                  # 0: width // head_dim
    head_dim: int = 32              # used only when heads == 0
    context: int = 128              # sequence length T
    vocab_size: int = 0             # 0: taken from the data source when the run config is resolved
    vocab_pad_multiple: int = 1     # embedding rows padded to a multiple (64 helps GPUs); logits beyond vocab_size are masked
    norm: str = "layernorm"         # layernorm | rmsnorm (pre-norm)
    pos: str = "learned"            # learned | rope
    mlp: str = "gelu"               # gelu | swiglu
    mlp_ratio: float = 4.0          # hidden = round(mlp_ratio * width); for swiglu the usual 8/3 is a good ratio
    tie_embeddings: bool = True
    bias: bool = False
    init_std: float = 0.02          # std of embeddings and hidden weights under SP
    parametrization: str = "sp"     # sp | mup (Yang et al. 2022, Tensor Programs V)
    mup_base_width: int = 0         # base width for muP multipliers; required when parametrization == "mup"

    def validate(self) -> None:
        """Raise ValueError naming the bad key. Called before anything trains."""
        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be one of {KINDS}, got {self.kind!r}")
        if self.width <= 0:
            raise ValueError(f"model.width must be positive, got {self.width}")
        if self.depth <= 0:
            raise ValueError(f"model.depth must be positive, got {self.depth}")
        if self.context <= 0:
            raise ValueError(f"model.context must be positive, got {self.context}")
        if self.vocab_size < 0:
            raise ValueError(f"model.vocab_size must be >= 0, got {self.vocab_size}")
        if self.vocab_pad_multiple <= 0:
            raise ValueError(f"model.vocab_pad_multiple must be positive, got {self.vocab_pad_multiple}")
        if self.norm not in NORMS:
            raise ValueError(f"model.norm must be one of {NORMS}, got {self.norm!r}")
        if self.pos not in POSITIONS:
            raise ValueError(f"model.pos must be one of {POSITIONS}, got {self.pos!r}")
        if self.mlp not in MLPS:
            raise ValueError(f"model.mlp must be one of {MLPS}, got {self.mlp!r}")
        if self.mlp_ratio <= 0:
            raise ValueError(f"model.mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.init_std <= 0:
            raise ValueError(f"model.init_std must be positive, got {self.init_std}")
        if self.parametrization not in PARAMETRIZATIONS:
            raise ValueError(f"model.parametrization must be one of {PARAMETRIZATIONS}, got {self.parametrization!r}")
        if self.kind == "gpt":
            if self.heads < 0:
                raise ValueError(f"model.heads must be >= 0, got {self.heads}")
            if self.heads == 0:
                if self.head_dim <= 0 or self.width % self.head_dim:
                    raise ValueError(f"model.head_dim={self.head_dim} must divide model.width={self.width}")
            elif self.width % self.heads:
                raise ValueError(f"model.heads={self.heads} must divide model.width={self.width}")
            if self.pos == "rope" and (self.width // self.n_heads) % 2:
                raise ValueError("model.pos=rope needs an even head size (model.width / model.heads)")
        if self.parametrization == "mup":
            if self.mup_base_width <= 0:
                raise ValueError("model.parametrization=mup needs model.mup_base_width > 0")
            if self.mup_base_width > self.width:
                raise ValueError(f"model.mup_base_width={self.mup_base_width} is larger than model.width={self.width}")
            if self.kind != "gpt":
                raise ValueError("model.parametrization=mup is GPT-only (model.kind=lstm has no muP rules here)")
            if self.heads > 0 and self.mup_base_width % self.heads:
                raise ValueError(f"model.heads={self.heads} must divide model.mup_base_width={self.mup_base_width}")

    @property
    def n_heads(self) -> int:
        return self.heads if self.heads > 0 else self.width // self.head_dim

    @property
    def padded_vocab(self) -> int:
        m = self.vocab_pad_multiple
        return -(-self.vocab_size // m) * m

    @property
    def mlp_hidden(self) -> int:
        return int(round(self.mlp_ratio * self.width))
