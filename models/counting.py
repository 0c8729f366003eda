"""Parameter and FLOP counts from a ModelConfig alone (no torch).

Sweeps plan budgets and analysis converts tokens to compute with these
numbers, so they must not need a deep-learning stack. `tests/test_models.py`
checks `param_counts` against the built models' `numel`, and
`tests/test_flops.py` checks the "exact" FLOPs against torch's FLOP counter.

Parameter split
---------------
embedding      token embedding (`vocab_size` rows) + learned position table
               (GPT, pos=learned) + the output head when it is untied.
non_embedding  everything else: attention, MLP / LSTM gates, norms, biases.
total          embedding + non_embedding.
vocab_padding  the rows padding adds to the embedding (and an untied head) so that
               `padded_vocab` is a multiple of `vocab_pad_multiple` (64 on GPUs).
               They are never used (their logits are cut off), so they are counted
               apart: a CPU run (no padding) and a GPU run (padding 64) of one shape
               have the same N and FLOPs and mix in one fit. The built model's numel
               is total + vocab_padding.

Kaplan et al. 2020 (Sec. 2.1) exclude vocabulary and position embeddings from
N; we count the untied head with the embeddings for the same reason (it scales
with the vocabulary, not with the model's depth or width), so N_non_embedding
is the Kaplan N. Chinchilla-style fits use `total`.

FLOP conventions (training = forward + backward = 3 x forward)
--------------------------------------------------------------
"6N"      6 * N_non_embedding.
"kaplan"  6 * (N_non_embedding + n_layer * n_ctx * d_model): Kaplan et al.
          2020, Table 1 (C_forward = 2N + 2 n_layer n_ctx d_attn, with
          d_attn = d_model), times 3 for the backward pass. LSTM: equal to 6N
          (no attention term).
"exact"   3 * every forward matmul at 2 FLOPs per multiply-add, with attention
          scores and values over the full T x T (what SDPA computes; the causal
          mask does not skip work in the math kernel) and the output head over
          the `vocab_size` rows that are used (padding rows are compute spent
          on nothing). Elementwise ops, norms, softmax and biases are not
          counted (as in torch.utils.flop_counter).

For MFU, `useful_flops_per_token` counts attention scores and values over the
causal half of the T x T square (the other half is masked, and flash-style
kernels skip it): the FLOPs that had to be done, not the ones a math kernel did.
"""
from __future__ import annotations

from models.config import ModelConfig

CONVENTIONS = ("6N", "kaplan", "exact")


def _norm_params(cfg: ModelConfig) -> int:
    # LayerNorm: gain (+ shift when bias); RMSNorm: gain only
    if cfg.norm == "layernorm":
        return cfg.width * (2 if cfg.bias else 1)
    return cfg.width


def _gpt_layer_params(cfg: ModelConfig) -> int:
    d, h, b = cfg.width, cfg.mlp_hidden, int(cfg.bias)
    attn = (d * 3 * d + 3 * d * b) + (d * d + d * b)          # qkv projection + output projection
    if cfg.mlp == "gelu":
        mlp = (d * h + h * b) + (h * d + d * b)               # up, down
    else:
        mlp = 2 * (d * h + h * b) + (h * d + d * b)           # gate, up, down (SwiGLU, Shazeer 2020)
    return attn + mlp + 2 * _norm_params(cfg)                 # two pre-norms per block


def _lstm_layer_params(cfg: ModelConfig) -> int:
    # nn.LSTM: W_ih (4h x in), W_hh (4h x h), and b_ih, b_hh (4h each) when bias
    h = cfg.width
    return 4 * h * (h + h) + (8 * h if cfg.bias else 0)


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """{"total", "embedding", "non_embedding", "vocab_padding"}; total + vocab_padding is the built
    model's numel."""
    d, v = cfg.width, cfg.vocab_size
    tables = 1 if cfg.tie_embeddings else 2                   # the embedding, and an untied output head (no bias)
    embedding = tables * v * d
    padding = tables * (cfg.padded_vocab - v) * d
    if cfg.kind == "gpt":
        if cfg.pos == "learned":
            embedding += cfg.context * d
        non_embedding = cfg.depth * _gpt_layer_params(cfg) + _norm_params(cfg)
    elif cfg.kind == "lstm":
        non_embedding = cfg.depth * _lstm_layer_params(cfg) + _norm_params(cfg)
    else:
        raise ValueError(f"model.kind must be gpt or lstm, got {cfg.kind!r}")
    return {"total": embedding + non_embedding, "embedding": embedding, "non_embedding": non_embedding,
            "vocab_padding": padding}


def _gpt_forward_matmul_flops(cfg: ModelConfig) -> float:
    """Forward FLOPs per token of every matmul (2 per multiply-add), torchtitan style."""
    d, h, t, n_layers = cfg.width, cfg.mlp_hidden, cfg.context, cfg.depth
    qkv = 2 * d * 3 * d
    scores = 2 * t * d          # q . k for T keys, summed over heads (H * d_head = d)
    values = 2 * t * d          # softmax(qk) @ v
    out = 2 * d * d
    mlp = 2 * d * h * (2 if cfg.mlp == "gelu" else 3)
    head = 2 * d * cfg.vocab_size
    return n_layers * (qkv + scores + values + out + mlp) + head


def _lstm_forward_matmul_flops(cfg: ModelConfig) -> float:
    """Per layer the four gates: W_ih x (4h x in) and W_hh h (4h x h); input width = h at every layer."""
    h = cfg.width
    gates = 2 * 4 * h * (h + h)
    head = 2 * h * cfg.vocab_size
    return cfg.depth * gates + head


def flops_per_token(cfg: ModelConfig, convention: str = "exact") -> float:
    """Training FLOPs per token (forward + backward) under a named convention."""
    if convention not in CONVENTIONS:
        raise ValueError(f"FLOP convention must be one of {CONVENTIONS}, got {convention!r}")
    n = param_counts(cfg)["non_embedding"]
    if convention == "6N":
        return 6.0 * n
    if convention == "kaplan":
        attn = cfg.depth * cfg.context * cfg.width if cfg.kind == "gpt" else 0
        return 6.0 * (n + attn)
    forward = _gpt_forward_matmul_flops(cfg) if cfg.kind == "gpt" else _lstm_forward_matmul_flops(cfg)
    # backward = grad wrt inputs + grad wrt weights, each as large as the forward matmul
    return 3.0 * forward


def useful_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token for MFU: "exact" with causal attention counted over the lower
    triangle only (T(T+1)/2 of the T x T scores, ~half; see the module doc)."""
    full = flops_per_token(cfg, "exact")
    if cfg.kind != "gpt":
        return full
    t = cfg.context
    masked_fraction = (t - 1) / (2 * t)                       # 1 - (T+1)/(2T): the masked upper triangle
    attention = 3 * cfg.depth * (2 * t * cfg.width) * 2       # scores and values, forward + backward
    return full - attention * masked_fraction


def flops_per_token_by_name(cfg: ModelConfig) -> dict[str, float]:
    """All conventions at once: {"6N": ..., "kaplan": ..., "exact": ...}."""
    return {c: flops_per_token(cfg, c) for c in CONVENTIONS}
