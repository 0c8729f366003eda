"""Behaviour of the GPT and LSTM language models, their counts and the shape rule."""
from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from models import ModelConfig, build_model
from models.counting import param_counts
from models.shapes import ModelShape, shape_for, size_ladder

V = 61        # odd on purpose: exercises vocab padding
T = 16


def gpt(**kw) -> ModelConfig:
    base = dict(kind="gpt", width=32, depth=2, head_dim=8, context=T, vocab_size=V)
    return ModelConfig(**{**base, **kw})


def lstm(**kw) -> ModelConfig:
    base = dict(kind="lstm", width=32, depth=2, context=T, vocab_size=V)
    return ModelConfig(**{**base, **kw})


GPT_VARIANTS = [
    gpt(norm=n, pos=p, mlp=m, tie_embeddings=t)
    for n, p, m, t in itertools.product(("layernorm", "rmsnorm"), ("learned", "rope"), ("gelu", "swiglu"), (True, False))
]
LSTM_VARIANTS = [lstm(tie_embeddings=t, bias=b) for t in (True, False) for b in (True, False)]


def variant_id(cfg: ModelConfig) -> str:
    if cfg.kind == "lstm":
        return f"lstm-tied{int(cfg.tie_embeddings)}-bias{int(cfg.bias)}"
    return f"{cfg.norm}-{cfg.pos}-{cfg.mlp}-tied{int(cfg.tie_embeddings)}"


def tokens(b: int = 3, t: int = T, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (b, t), generator=g)


@pytest.mark.parametrize("cfg", GPT_VARIANTS + LSTM_VARIANTS, ids=variant_id)
def test_output_shape_and_finite(cfg):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg, vocab_pad_multiple=16))
    logits, state = model(tokens())
    assert logits.shape == (3, T, V)            # padded columns sliced off
    assert torch.isfinite(logits).all()
    assert model.config.vocab_size == V
    if cfg.kind == "gpt":
        assert state is None
    else:
        h, c = state
        assert h.shape == c.shape == (cfg.depth, 3, cfg.width)


@pytest.mark.parametrize("cfg", [gpt(), gpt(pos="rope", mlp="swiglu", norm="rmsnorm"), lstm()], ids=variant_id)
def test_causal(cfg):
    """Changing token t never changes the logits at positions before t."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    idx = tokens(b=2)
    t = 9
    idx2 = idx.clone()
    idx2[:, t] = (idx2[:, t] + 1) % V
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(idx2)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-6)
    assert (a[:, t:] - b[:, t:]).abs().max() > 1e-4   # the change is visible from t on


@pytest.mark.parametrize("cfg", [gpt(), gpt(tie_embeddings=False, pos="rope"), lstm(), lstm(tie_embeddings=False)],
                         ids=variant_id)
def test_initial_loss_near_ln_v(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    idx = tokens(b=8, t=T + 1, seed=1)
    with torch.no_grad():
        logits, _ = model(idx[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, V), idx[:, 1:].reshape(-1)).item()
    assert abs(loss - math.log(V)) < 0.15


@pytest.mark.parametrize("cfg", [gpt(), lstm()], ids=variant_id)
def test_overfits_one_batch(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    idx = tokens(b=4, t=T + 1, seed=2)
    opt = torch.optim.AdamW(model.param_groups(0.0, True), lr=1e-2)
    for _ in range(60):
        logits, _ = model(idx[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * math.log(V)


COUNT_GRID = [
    gpt(norm=n, pos=p, mlp=m, tie_embeddings=t, bias=b, vocab_pad_multiple=pad, mlp_ratio=r)
    for n, p, m, t, b, pad, r in itertools.product(
        ("layernorm", "rmsnorm"), ("learned", "rope"), ("gelu", "swiglu"), (True, False), (True, False), (1, 64), (4.0, 8 / 3))
] + [lstm(tie_embeddings=t, bias=b, norm=n, vocab_pad_multiple=pad)
     for t, b, n, pad in itertools.product((True, False), (True, False), ("layernorm", "rmsnorm"), (1, 64))]


def test_param_counts_equal_numel():
    for cfg in COUNT_GRID:
        model = build_model(cfg)
        counts = param_counts(cfg)
        assert counts["total"] + counts["vocab_padding"] == sum(p.numel() for p in model.parameters()), cfg
        emb = sum(p.numel() for name, p, role in model.named_roles() if role in ("embedding", "readout"))
        assert counts["embedding"] + counts["vocab_padding"] == emb, cfg
        assert counts["non_embedding"] == counts["total"] - counts["embedding"]


def test_param_counts_known_value():
    # GPT-2 small shape: 124,439,808 params with a 50257-row tied embedding and 1024 positions
    # (nanoGPT's reported count); its non-embedding part is 85,056,000 (bias and LayerNorm shifts on).
    cfg = ModelConfig(width=768, depth=12, heads=12, context=1024, vocab_size=50257, bias=True)
    counts = param_counts(cfg)
    assert counts["total"] == 124_439_808
    assert counts["non_embedding"] == 85_056_000


def test_param_groups_cover_every_parameter_once():
    for cfg in (gpt(bias=True), gpt(tie_embeddings=False), lstm(bias=True)):
        model = build_model(cfg)
        groups = model.param_groups(0.1, exclude_from_decay=True)
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))
        for g in groups:
            assert g["lr_mult"] == 1.0 and {"params", "weight_decay", "lr_mult"} <= set(g)
            for p, name in zip(g["params"], g["names"]):
                no_decay = p.ndim < 2 or name.startswith(("wte", "wpe"))
                assert g["weight_decay"] == (0.0 if no_decay else 0.1), name
        # without exclusion everything decays
        assert all(g["weight_decay"] == 0.1 for g in model.param_groups(0.1, exclude_from_decay=False))
        torch.optim.AdamW(groups, lr=1e-3)   # accepted by the optimizer as is


@pytest.mark.parametrize("kw, key", [
    (dict(width=30, head_dim=8), "model.head_dim"),
    (dict(heads=3), "model.heads"),
    (dict(parametrization="mup"), "model.mup_base_width"),
    (dict(parametrization="mup", mup_base_width=64, tie_embeddings=False), "model.mup_base_width"),
    (dict(pos="rope", heads=32, head_dim=1), "model.pos"),
    (dict(norm="batchnorm"), "model.norm"),
    (dict(vocab_size=0), "model.vocab_size"),
])
def test_bad_config_names_key(kw, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_model(gpt(**kw))


def test_mup_lstm_refused():
    with pytest.raises(ValueError, match="GPT-only"):
        build_model(lstm(parametrization="mup", mup_base_width=16, tie_embeddings=False))


def test_sequence_longer_than_context_refused():
    with pytest.raises(ValueError, match="model.context"):
        build_model(gpt())(tokens(t=T + 1))


@pytest.mark.parametrize("tie", [True, False])
def test_lstm_state_threading(tie):
    """Two halves with the carried (h, c) give exactly the logits of the whole sequence."""
    torch.manual_seed(0)
    model = build_model(lstm(tie_embeddings=tie)).eval()
    idx = tokens(b=2, t=T)
    with torch.no_grad():
        whole, (h, c) = model(idx)
        first, state = model(idx[:, : T // 2])
        second, (h2, c2) = model(idx[:, T // 2:], state)
        fresh, _ = model(idx[:, T // 2:])
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((h2, c2), (h, c), rtol=1e-5, atol=1e-6)
    assert (fresh - second).abs().max() > 1e-4   # the state matters


def test_same_seed_same_model():
    torch.manual_seed(3)
    a = build_model(gpt())
    torch.manual_seed(3)
    b = build_model(gpt())
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_gpt2_init_scales():
    torch.manual_seed(0)
    cfg = gpt(width=256, depth=8, head_dim=32, tie_embeddings=False, vocab_size=512)
    model = build_model(cfg)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].mlp.proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(16), rel=0.05)


# ---- shape rule -----------------------------------------------------------

def test_shape_for_width_rule():
    s = shape_for(width=768, head_dim=64)
    assert s == ModelShape(768, 12, 12)          # GPT-2 small's aspect ratio 64
    assert shape_for(width=32).depth == 1
    with pytest.raises(ValueError, match="multiple of 32"):
        shape_for(width=100)
    with pytest.raises(ValueError, match="exactly one"):
        shape_for()


@pytest.mark.parametrize("kind, lo, hi, n, head_dim", [
    ("gpt", 1e4, 5e6, 8, 16), ("gpt", 1e6, 1.25e8, 6, 64), ("lstm", 1e4, 5e6, 8, 32), ("lstm", 1e6, 1.25e8, 5, 32),
])
def test_size_ladder_distinct_increasing_and_close(kind, lo, hi, n, head_dim):
    template = ModelConfig(kind=kind, vocab_size=512, context=128)
    ladder = size_ladder(lo, hi, n, kind=kind, head_dim=head_dim, template=template)
    sizes = [param_counts(s.apply(template))["non_embedding"] for s in ladder]
    assert len(ladder) == n and all(a < b for a, b in zip(sizes, sizes[1:]))
    assert lo / 3 < sizes[0] < lo * 3 and hi / 3 < sizes[-1] < hi * 3
    for s in ladder:
        s.apply(template).validate()                       # every rung is a buildable config
        if kind == "gpt":
            assert s.width % head_dim == 0 and s.heads * head_dim == s.width


def test_size_ladder_refuses_impossible_request():
    with pytest.raises(ValueError, match="fewer sizes"):
        size_ladder(1e4, 2e4, 10, head_dim=64)


def test_counting_modules_do_not_import_torch():
    code = "import sys, models, models.counting, models.shapes, models.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_prints_counts():
    out = subprocess.run([sys.executable, "-m", "models", "width=64", "depth=2", "model.vocab_size=100"],
                         check=True, capture_output=True, text=True).stdout
    counts = param_counts(ModelConfig(width=64, depth=2, vocab_size=100))
    assert f"{counts['non_embedding']:,d}" in out and "kaplan" in out
    bad = subprocess.run([sys.executable, "-m", "models", "heads=5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "model.heads" in bad.stderr


@pytest.mark.slow
def test_models_never_import_train():
    # layering: models <- train <- sweeps; the counting CLI must not reach up into train
    code = ("import sys, models, models.__main__, models.gpt, models.packed, models.lstm; "
            "assert not [m for m in sys.modules if m == 'train' or m.startswith('train.')]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_vocab_padding_is_counted_apart_so_cpu_and_gpu_runs_share_n_and_flops():
    from models.counting import flops_per_token
    for kind, tie in (("gpt", True), ("gpt", False), ("lstm", False)):
        plain = ModelConfig(kind=kind, width=64, depth=2, context=32, vocab_size=100, tie_embeddings=tie)
        padded = dataclasses.replace(plain, vocab_pad_multiple=64)
        a, b = param_counts(plain), param_counts(padded)
        assert (a["total"], a["embedding"], a["vocab_padding"]) == (b["total"], b["embedding"], 0)
        assert b["vocab_padding"] == (1 if tie else 2) * 28 * 64
        for conv in ("6N", "kaplan", "exact"):
            assert flops_per_token(plain, conv) == flops_per_token(padded, conv)
