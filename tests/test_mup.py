"""muP: the coordinate check (flat under muP, growing under SP), equality with SP at base width, bad configs."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from models import ModelConfig, build_model
from train.coordcheck import CoordCheckConfig, coord_check, main as coordcheck_main, width_slopes


def mup(width: int, base: int = 32, **kw) -> ModelConfig:
    base_kw = dict(width=width, depth=2, head_dim=16, context=16, vocab_size=64, tie_embeddings=False,
                   parametrization="mup", mup_base_width=base)
    return ModelConfig(**{**base_kw, **kw})


@pytest.fixture(scope="module")
def coord_records():
    cfg = CoordCheckConfig(widths=(32, 64, 128, 256), depth=2, head_dim=16, context=16, vocab_size=64,
                           batch_size=4, steps=4, lr=1e-2)
    return coord_check(cfg)


THRESHOLD = 0.45   # |d log|x| / d log width|: muP must stay below, SP must exceed


@pytest.mark.parametrize("layer", ["block.0", "block.1", "logits"])
def test_coordinates_flat_under_mup_and_growing_under_sp(coord_records, layer):
    slopes = width_slopes(coord_records, step=4)
    assert abs(slopes[("mup", layer)]) < THRESHOLD < slopes[("sp", layer)], slopes
    at_init = width_slopes(coord_records, step=0)
    if layer == "logits":
        # readout multiplier 1/m on a sum of `width` uncorrelated terms: logits shrink like width^-1/2 at init
        assert at_init[("mup", layer)] == pytest.approx(-0.5, abs=0.15)
    else:
        assert abs(at_init[("mup", layer)]) < THRESHOLD   # hidden coordinates are O(1) at init


def test_width_slopes_reads_a_power_law():
    from train.coordcheck import Record
    recs = [Record("sp", w, 1, "x", 3.0 * w ** 1.5) for w in (16, 32, 64)]
    assert width_slopes(recs, 1)[("sp", "x")] == pytest.approx(1.5)


@pytest.mark.parametrize("heads", [0, 2])
def test_mup_at_base_width_equals_sp(heads):
    cfg_mup = mup(32, base=32, heads=heads)
    cfg_sp = dataclasses.replace(cfg_mup, parametrization="sp", mup_base_width=0)
    idx = torch.randint(0, 64, (2, 17), generator=torch.Generator().manual_seed(0))
    models = []
    for cfg in (cfg_mup, cfg_sp):
        torch.manual_seed(7)
        models.append(build_model(cfg))
    for p_a, p_b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(p_a, p_b)
    outs = []
    for model in models:
        groups = model.param_groups(0.1, True)
        assert all(g["lr_mult"] == 1.0 for g in groups)
        opt = torch.optim.AdamW(groups, lr=1e-2)
        for _ in range(2):
            logits, _ = model(idx[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, 64), idx[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        outs.append(model(idx[:, :-1])[0])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_mup_multipliers_at_wider_width():
    torch.manual_seed(0)
    model = build_model(mup(256, base=64))                      # m = 4
    mults = {name: g["lr_mult"] for g in model.param_groups(0.1, True) for name in g["names"]}
    assert mults["blocks.0.attn.qkv.weight"] == mults["blocks.1.mlp.proj.weight"] == 0.25
    assert mults["wte.weight"] == mults["head.weight"] == mults["blocks.0.norm1.weight"] == 1.0
    assert model.output_mult == 0.25
    # hidden init std = init_std / sqrt(m); embeddings and readout keep init_std
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02 / 2, rel=0.05)
    assert model.head.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.scale == pytest.approx(1 / math.sqrt(16))   # head size fixed: as at base


def test_mup_attention_scale_with_fixed_heads():
    # heads fixed at 2: head size grows 32 -> 128, scale = sqrt(32) / 128 (1/d_head, equal to SP at base)
    model = build_model(mup(256, base=64, heads=2))
    assert model.blocks[0].attn.scale == pytest.approx(math.sqrt(32) / 128)


def test_mup_logits_stay_order_one_at_init():
    idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    scales = []
    for width in (64, 512):
        torch.manual_seed(0)
        with torch.no_grad():
            scales.append(build_model(mup(width, base=64))(idx)[0].std().item())
    assert scales[1] < scales[0]       # readout 1/m: logits shrink at init rather than grow


@pytest.mark.parametrize("kw, key", [
    (dict(mup_base_width=0), "model.mup_base_width"),
    (dict(mup_base_width=64, width=32), "model.mup_base_width"),
    (dict(heads=3, width=48, mup_base_width=32, head_dim=16), "model.heads"),
    (dict(kind="lstm"), "model.parametrization"),
])
def test_bad_mup_config_names_key(kw, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_model(mup(**{"width": 64, **kw}))


def test_coordcheck_cli(tmp_path, capsys):
    rc = coordcheck_main(["--widths", "16,32", "--steps", "1", "--depth", "1", "--context", "8",
                          "--vocab-size", "32", "--batch-size", "2", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "mup" in out and "sp" in out and "slope" in out
    assert (tmp_path / "coordcheck.png").stat().st_size > 1000
    assert coordcheck_main(["--widths", "20,32"]) == 2
    assert "--widths" in capsys.readouterr().err
