"""FLOPs/token conventions against torch's FLOP counter and against hand-computed values.

How the counter is made to see every matmul on CPU: `FlopCounterMode` counts
aten matmul ops (mm, addmm, bmm, SDPA kernels it knows). On CPU two fused ops
are invisible to it: SDPA's `_scaled_dot_product_flash_attention_for_cpu`
(counted as 0) and the oneDNN (mkldnn) LSTM kernel (counted as 0). So the
count runs with SDPA restricted to its MATH backend (plain bmm's, the same
result) and with oneDNN disabled, where CPU `aten.lstm` runs its composite
implementation of per-step `linear`/`mm` calls. Both are the same maths as the
production path; only the kernels differ. The tests below first assert the
counter actually sees the attention and LSTM matmuls, so a counter that
silently counts nothing cannot pass.

Known small differences from the formula, within the 5% tolerance: the LSTM's
first step multiplies the zero initial state by W_hh but needs no gradient for
that state (one matmul per layer out of 3T), the embedding lookup costs no
matmul in either, and with vocab padding the counter also sees the head's
padding rows, which the formula leaves out (compute spent on unused logits).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from models import ModelConfig, build_model
from models.counting import flops_per_token, flops_per_token_by_name, param_counts


def counted_train_flops_per_token(cfg: ModelConfig, batch: int = 2) -> tuple[float, dict]:
    torch.manual_seed(0)
    model = build_model(cfg)
    idx = torch.randint(0, cfg.vocab_size, (batch, cfg.context + 1))
    with torch.backends.mkldnn.flags(enabled=False), sdpa_kernel(SDPBackend.MATH), \
            FlopCounterMode(display=False) as counter:
        logits, _ = model(idx[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), idx[:, 1:].reshape(-1))
        loss.backward()
    by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops() / (batch * cfg.context), by_op


GPT_CONFIGS = [
    ModelConfig(width=64, depth=2, head_dim=16, context=32, vocab_size=100),
    ModelConfig(width=96, depth=3, heads=3, context=64, vocab_size=257, vocab_pad_multiple=64,
                mlp="swiglu", mlp_ratio=8 / 3, pos="rope", norm="rmsnorm", tie_embeddings=False, bias=True),
    ModelConfig(width=128, depth=1, head_dim=32, context=128, vocab_size=50),   # attention-heavy: T = width
]
LSTM_CONFIGS = [
    ModelConfig(kind="lstm", width=64, depth=2, context=32, vocab_size=100),
    ModelConfig(kind="lstm", width=48, depth=3, context=16, vocab_size=257, vocab_pad_multiple=64,
                tie_embeddings=False, bias=True),
]


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # emitted by mkldnn.flags on CPU builds
@pytest.mark.parametrize("cfg", GPT_CONFIGS + LSTM_CONFIGS, ids=lambda c: f"{c.kind}-w{c.width}-d{c.depth}")
def test_exact_matches_flop_counter(cfg):
    counted, by_op = counted_train_flops_per_token(cfg)
    if cfg.kind == "gpt":
        assert by_op.get("aten.bmm", 0) > 0, "the counter must see the attention matmuls"
    else:
        assert sum(by_op.values()) > 4 * 2 * cfg.width * cfg.padded_vocab, "the counter must see the LSTM gates"
    assert flops_per_token(cfg, "exact") == pytest.approx(counted, rel=0.05)


def test_hand_computed_conventions():
    # width 64, depth 2, GELU MLP (ratio 4), LayerNorm without bias, context 32, vocab 100 tied
    cfg = ModelConfig(width=64, depth=2, head_dim=16, context=32, vocab_size=100)
    d, L, T, V = 64, 2, 32, 100
    per_layer = 3 * d * d + d * d + 2 * (4 * d * d) + 2 * d    # qkv, proj, MLP up+down, two LayerNorm gains
    n = L * per_layer + d                                       # + final norm gain
    assert n == 98_624 == param_counts(cfg)["non_embedding"]
    assert flops_per_token(cfg, "6N") == 6 * 98_624 == 591_744
    assert flops_per_token(cfg, "kaplan") == 6 * (98_624 + L * T * d) == 616_320
    forward = L * (2 * 12 * d * d + 4 * T * d) + 2 * d * V      # 12 d^2 weights, 4 T d attention, head
    assert flops_per_token(cfg, "exact") == 3 * forward == 677_376

    lstm = ModelConfig(kind="lstm", width=64, depth=2, context=32, vocab_size=100)
    n_lstm = 2 * (4 * 64 * 128) + 64                            # W_ih, W_hh per layer, final norm gain
    assert param_counts(lstm)["non_embedding"] == n_lstm
    by_name = flops_per_token_by_name(lstm)
    assert by_name["6N"] == by_name["kaplan"] == 6 * n_lstm
    assert by_name["exact"] == 3 * (2 * (2 * 4 * 64 * 128) + 2 * 64 * 100)


def test_unknown_convention_refused():
    with pytest.raises(ValueError, match="convention"):
        flops_per_token(ModelConfig(vocab_size=10), "chinchilla")
