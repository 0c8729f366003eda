"""Packed training: K models of one shape trained as one batched computation must give
each model exactly the curve its own single run gives (CPU, float tolerance), write the
same run directories, resume after an interruption, and refuse incompatible packs."""
import math
import sys

import numpy as np
import pytest
import torch

from models import build_model
from models.config import ModelConfig
from models.packed import PackedGPT
from sweeps.packing import check_packable, group_compatible
from train.api import train_run
from train.config import ConfigError, RunConfig
from train.cli import main as train_main
from train.packed import train_packed
from train.packed_adamw import clip_per_model
from train.rundir import read_run

TINY = {
    "model.width": 32, "model.depth": 2, "model.context": 32, "data.vocab_size": 64,
    "train.batch_tokens": 512, "train.tokens": 512 * 24, "eval.tokens": 1024, "eval.points": 6,
    "train.threads": 1, "run.log_every": 1, "run.ckpt_every": 5, "train.device": "cpu",
}
# different seeds, peak LRs, schedules, optimizer settings and token budgets; run 0 and 2 clip
VARIANTS = [
    {"run.seed": 0, "optim.lr": 3e-3, "train.grad_clip": 0.05},
    {"run.seed": 1, "optim.lr": 1e-2, "schedule.kind": "wsd", "train.grad_clip": 0.0},
    {"run.seed": 2, "optim.lr": 2e-3, "schedule.kind": "linear", "schedule.warmup_steps": 4,
     "optim.weight_decay": 0.3, "optim.beta2": 0.99, "train.grad_clip": 0.05, "train.tokens": 512 * 17},
]


def tiny(**kw) -> RunConfig:
    return RunConfig().with_overrides({**TINY, **kw})


def curve(run_dir):
    """(kind, step) keys and loss values of a run's metrics, plus lr/tokens/flops."""
    _, rows, _ = read_run(run_dir)
    keys = [(r["kind"], r["step"]) for r in rows]
    values = np.array([r["loss"] if r["kind"] == "train" else r["val_loss"] for r in rows], dtype=float)
    exact = [(r["lr"], r["tokens"], r["flops"]) for r in rows]
    return keys, values, exact


def assert_same_curve(single_dir, packed_dir):
    k1, v1, e1 = curve(single_dir)
    k2, v2, e2 = curve(packed_dir)
    assert k1 == k2
    np.testing.assert_allclose(v2, v1, rtol=1e-4)
    assert e1 == e2


@pytest.fixture(scope="module")
def singles(tmp_path_factory):
    """The three variants trained as ordinary single runs (the reference)."""
    root = tmp_path_factory.mktemp("single")
    dirs = [root / f"run{i}" for i in range(len(VARIANTS))]
    summaries = [train_run(tiny(**v), d) for v, d in zip(VARIANTS, dirs)]
    assert all(s["status"] == "completed" for s in summaries)
    return dirs


# ---- the packed model ----------------------------------------------------

@pytest.mark.parametrize("over", [
    {},
    {"norm": "rmsnorm", "pos": "rope", "mlp": "swiglu", "tie_embeddings": False, "bias": True, "vocab_pad_multiple": 64},
    {"tie_embeddings": False, "parametrization": "mup", "mup_base_width": 16, "bias": True},
])
def test_packed_forward_and_grads_equal_the_single_models(over):
    cfg = ModelConfig(width=32, depth=2, context=16, vocab_size=50, **over)
    models = []
    for seed in (3, 4, 5):
        torch.manual_seed(seed)
        models.append(build_model(cfg))
    with torch.no_grad():   # make gains/shifts non-trivial so their packing is tested too
        for m in models:
            for p in m.parameters():
                if p.ndim == 1:
                    p.add_(0.1 * torch.randn_like(p))
    packed = PackedGPT.from_models(models)
    idx_BxT = torch.randint(0, 50, (4, 16))
    logits_KxBxTxV, _ = packed(idx_BxT)
    assert logits_KxBxTxV.shape == (3, 4, 16, 50)
    ref = torch.stack([m(idx_BxT)[0] for m in models])
    torch.testing.assert_close(logits_KxBxTxV, ref, rtol=1e-5, atol=1e-5)

    logits_KxBxTxV.square().mean(dim=(1, 2, 3)).sum().backward()
    for m in models:
        m(idx_BxT)[0].square().mean().backward()
    for name, p in packed.named_parameters():
        for k, m in enumerate(models):
            torch.testing.assert_close(p.grad[k], m.get_parameter(name).grad, rtol=1e-4, atol=1e-6)

    # per-model inputs (K, B, T) and the round trip back to ordinary models
    idx_KxBxT = torch.randint(0, 50, (3, 2, 16))
    torch.testing.assert_close(packed(idx_KxBxT)[0][1], models[1](idx_KxBxT[1])[0], rtol=1e-5, atol=1e-5)
    for m, back in zip(models, packed.to_models()):
        for (n, a), b in zip(m.state_dict().items(), back.state_dict().values()):
            assert torch.equal(a, b), n


def test_from_models_refuses_models_of_different_shapes():
    a = build_model(ModelConfig(width=32, depth=1, context=16, vocab_size=50))
    b = build_model(ModelConfig(width=64, depth=1, context=16, vocab_size=50))
    with pytest.raises(ValueError, match="different ModelConfig"):
        PackedGPT.from_models([a, b])
    with pytest.raises(ValueError, match="gpt only"):
        PackedGPT(ModelConfig(kind="lstm", width=32, depth=1, context=16, vocab_size=50), 2)


def test_clip_per_model_equals_torch_clipping_each_model():
    torch.manual_seed(0)
    scale_K = torch.tensor([0.01, 1.0, 1.0])
    grads = [torch.randn(3, 5, 4) * scale_K.view(3, 1, 1), torch.randn(3, 7) * scale_K.view(3, 1)]
    refs = []
    for k, max_norm in enumerate([0.5, 0.5, 0.0]):   # model 0 below the limit, model 2 unclipped
        single = [torch.nn.Parameter(torch.zeros_like(g[k])) for g in grads]
        for s, g in zip(single, grads):
            s.grad = g[k].clone()
        if max_norm:
            torch.nn.utils.clip_grad_norm_(single, max_norm)
        refs.append(torch.cat([s.grad.flatten() for s in single]))
    grad_KxP = torch.cat([g.flatten(1) for g in grads], dim=1)
    norms = clip_per_model(grad_KxP, torch.tensor([0.5, 0.5, 0.0]))
    assert norms.shape == (3,) and norms[1] > 0.5
    for k in range(3):
        torch.testing.assert_close(grad_KxP[k], refs[k])


# ---- the packed trainer ---------------------------------------------------

def test_packed_runs_equal_separate_runs(singles, tmp_path):
    cfgs = [tiny(**v) for v in VARIANTS] + [tiny(**{**VARIANTS[0], "train.grad_clip": 0.0})]
    dirs = [tmp_path / f"p{i}" for i in range(len(cfgs))]
    summaries = train_packed(cfgs, dirs)

    assert [s["status"] for s in summaries] == ["completed"] * 4
    assert [s["steps"] for s in summaries] == [24, 24, 17, 24]
    for single_dir, packed_dir in zip(singles, dirs):
        assert_same_curve(single_dir, packed_dir)
        c1, _, s1 = read_run(single_dir)
        c2, _, s2 = read_run(packed_dir)
        assert c1 == c2
        assert set(s1) <= set(s2)
        for key in ("final_train_loss", "final_val_loss", "loss_floor"):
            assert s2[key] == pytest.approx(s1[key], rel=1e-4)
        for key in ("tokens", "steps", "params_total", "flops_per_token", "run_id"):
            assert s2[key] == s1[key]
    # clipping is active: the same model without it follows another curve
    _, clipped, _ = curve(dirs[0])
    _, unclipped, _ = curve(dirs[3])
    assert np.abs(clipped - unclipped).max() > 1e-3
    # a finished pack is not retrained
    again = train_packed(cfgs, dirs)
    assert [s["wall_time_s"] for s in again] == [s["wall_time_s"] for s in summaries]


class Interrupt(Exception):
    pass


def test_interrupted_pack_resumes_exactly_and_single_runs_resume_from_its_checkpoints(singles, tmp_path):
    cfgs = [tiny(**v) for v in VARIANTS]
    dirs = [tmp_path / f"p{i}" for i in range(3)]

    def stop_at_step_14(row):
        if row["step"] >= 14:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_packed(cfgs, dirs, progress=stop_at_step_14)
    assert all(read_run(d)[2]["status"] == "failed" for d in dirs)
    assert (dirs[0] / "ckpt" / "step_00000010.pt").exists()

    # model 1 alone, as an ordinary single run, resumes from the pack's checkpoint
    assert train_run(cfgs[1], dirs[1])["status"] == "completed"
    # the other two resume as a pack (model 1 is finished and skipped)
    summaries = train_packed(cfgs, dirs)
    assert [s["status"] for s in summaries] == ["completed"] * 3
    for single_dir, packed_dir in zip(singles, dirs):
        assert_same_curve(single_dir, packed_dir)


def test_a_diverging_model_stops_while_the_others_finish(singles, tmp_path):
    # micro-batches of 8 sequences (gradient accumulation) give the same curve as whole batches
    micro = {"train.micro_batch_tokens": 256}
    cfgs = [tiny(**VARIANTS[0], **micro),
            tiny(**{**VARIANTS[0], **micro, "run.seed": 7, "optim.lr": 1e3, "train.grad_clip": 0.0})]
    paths = []
    for i, c in enumerate(cfgs):
        p = tmp_path / f"c{i}.json"
        p.write_text(__import__("json").dumps(c.to_dict()))
        paths += ["--run", str(p), str(tmp_path / f"p{i}")]
    assert train_main(paths) == 3   # exit code of a diverged run
    _, rows, summary = read_run(tmp_path / "p1")
    assert summary["status"] == "diverged" and "diverge_factor" in summary["error"]
    assert rows and summary["steps"] < 24
    assert read_run(tmp_path / "p0")[2]["status"] == "completed"
    assert_same_curve(singles[0], tmp_path / "p0")


def test_incompatible_packs_are_refused_naming_the_key_before_any_work(tmp_path):
    dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ConfigError, match="model.width"):
        train_packed([tiny(), tiny(**{"model.width": 64})], dirs)
    with pytest.raises(ConfigError, match="data.seed"):
        train_packed([tiny(), tiny(**{"data.seed": 1})], dirs)
    with pytest.raises(ConfigError, match="train.batch_tokens"):
        train_packed([tiny(), tiny(**{"train.batch_tokens": 1024})], dirs)
    with pytest.raises(ConfigError, match="gpt only"):
        train_packed([tiny(**{"model.kind": "lstm"})] * 2, dirs)
    with pytest.raises(ConfigError, match="distinct run directory"):
        train_packed([tiny(), tiny(**{"run.seed": 1})], [dirs[0], dirs[0]])
    with pytest.raises(ConfigError, match="2 configs but 1"):
        train_packed([tiny(), tiny()], dirs[:1])
    assert not any(d.exists() for d in dirs)


def test_group_compatible_packs_only_compatible_runs():
    cfgs = [tiny(**{"run.seed": s, "model.width": w, "optim.lr": lr})
            for w in (32, 64) for s in (0, 1, 2) for lr in (1e-3, 3e-3)]
    cfgs.append(tiny(**{"train.init_from": "/somewhere/step_00000010.pt"}))
    packs = group_compatible(cfgs, 4)
    assert sorted(i for p in packs for i in p) == list(range(len(cfgs)))
    assert all(1 <= len(p) <= 4 for p in packs)
    assert [12] in packs   # a branched run trains on its own
    for p in packs:
        if len(p) > 1:   # a pack of one trains as an ordinary run
            check_packable([cfgs[i] for i in p])
    assert len(packs) == 2 * math.ceil(6 / 4) + 1
    with pytest.raises(ValueError, match="pack size"):
        group_compatible(cfgs, 0)


# ---- sweep integration ----------------------------------------------------

SWEEP = """
name: packed_grid
base:
  model: {kind: gpt, width: 32, depth: 2, context: 32}
  data: {source: synthetic, vocab_size: 64}
  train: {tokens: 8192, batch_tokens: 512, device: cpu, threads: 1}
  eval: {points: 4, tokens: 1024}
family: grid
axes:
  optim.lr: [1.0e-3, 3.0e-3]
zip:
  - {run.seed: [0, 1], train.grad_clip: [0.05, 1.0]}
"""


@pytest.mark.slow
def test_sweep_run_with_pack_writes_the_same_run_directories(tmp_path, capsys):
    from sweeps.cli import main as sweep_main
    spec = tmp_path / "packed_grid.yaml"
    spec.write_text(SWEEP)
    out = tmp_path / "sweep"
    assert sweep_main(["run", str(spec), "--out", str(out), "--pack", "3", "--dry-run"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith(sys.executable)]
    # 4 runs of one shape: a pack of 3 and an ordinary run
    assert sorted(c.count("--run ") for c in commands) == [0, 3]
    assert all(c.split()[1:3] == ["-m", "train"] for c in commands)   # packs train through `python -m train --run ...`

    assert sweep_main(["run", str(spec), "--out", str(out), "--pack", "3", "--jobs", "2", "--quiet"]) == 0
    run_dirs = sorted(p.parent for p in out.glob("*/summary.json"))
    assert len(run_dirs) == 4
    packed = [d for d in run_dirs if read_run(d)[2].get("packed_with") == 3]
    assert len(packed) == 3
    for d in packed[:2]:   # each equals its ordinary single run
        config, _, summary = read_run(d)
        assert summary["status"] == "completed"
        train_run(RunConfig.from_dict(config), tmp_path / "ref" / d.name)
        assert_same_curve(tmp_path / "ref" / d.name, d)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_packed_model_on_cuda_matches_single_models_and_trains_in_bf16(tmp_path):
    cfg = ModelConfig(width=64, depth=2, context=32, vocab_size=64, vocab_pad_multiple=64)
    models = []
    for seed in range(4):
        torch.manual_seed(seed)
        models.append(build_model(cfg).cuda())
    packed = PackedGPT.from_models(models)
    idx_BxT = torch.randint(0, 64, (8, 32), device="cuda")
    with torch.no_grad():
        ref = torch.stack([m(idx_BxT)[0] for m in models])
        torch.testing.assert_close(packed(idx_BxT)[0], ref, rtol=1e-3, atol=1e-3)   # TF32 matmuls
    cfgs = [tiny(**{"run.seed": s, "train.device": "cuda", "train.dtype": "bfloat16"}) for s in range(4)]
    summaries = train_packed(cfgs, [tmp_path / f"p{i}" for i in range(4)])
    assert all(s["status"] == "completed" and s["device"].startswith("cuda") for s in summaries)
    assert all(s["final_val_loss"] < math.log(64) for s in summaries)
