"""The CPU optimizer (train.optim.PlainAdamW) is torch's AdamW: same numbers, same checkpoint layout."""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch

from models import build_model
from models.config import ModelConfig
from train.config import OptimConfig
from train.optim import PlainAdamW, build_optimizer


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(width=32, depth=1, heads=4, vocab_size=64, context=16, parametrization="mup",
                                   mup_base_width=16))


def _torch_adamw(model: torch.nn.Module, o: OptimConfig) -> torch.optim.AdamW:
    groups = model.param_groups(o.weight_decay, o.exclude_from_decay)
    for g in groups:
        g.setdefault("lr_mult", 1.0)
        g["lr"] = o.lr * g["lr_mult"]
    # exactly what the trainer built on the CPU before PlainAdamW (torch picks its single-tensor kernel there)
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, fused=False)


def _steps(model: torch.nn.Module, opt, n: int, first: int = 0) -> None:
    g = torch.Generator().manual_seed(123)
    batches = [torch.randint(0, 64, (4, 17), generator=g) for _ in range(first + n)][first:]
    for i, b in enumerate(batches):
        for grp in opt.param_groups:        # a changing lr, as the schedule sets it
            grp["lr"] = 3e-2 * (1 - (first + i) / 40) * grp["lr_mult"]
        logits, _ = model(b[:, :-1])
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


O = OptimConfig(lr=3e-2, beta1=0.9, beta2=0.95, weight_decay=0.1)


def test_cpu_adamw_matches_torch_adamw_bit_for_bit_over_mup_groups_decay_and_a_changing_lr():
    ours_model, torch_model = _model(), _model()
    ours = build_optimizer(ours_model, O, torch.device("cpu"))
    assert isinstance(ours, PlainAdamW)
    assert len({g["lr_mult"] for g in ours.param_groups}) > 1, "muP groups with different multipliers"
    assert {g["weight_decay"] for g in ours.param_groups} == {0.0, 0.1}, "decayed and undecayed groups"
    theirs = _torch_adamw(torch_model, O)
    _steps(ours_model, ours, 25)
    _steps(torch_model, theirs, 25)
    assert _same(ours_model, torch_model)
    for p, q in zip(ours_model.parameters(), torch_model.parameters(), strict=True):
        assert torch.equal(ours.state[p]["exp_avg_sq"], theirs.state[q]["exp_avg_sq"])
        assert float(ours.state[p]["step"]) == float(theirs.state[q]["step"]) == 25


@pytest.mark.parametrize("direction", ["torch to ours", "ours to torch"])
def test_a_checkpointed_state_moves_between_torch_adamw_and_ours_and_training_continues_identically(direction):
    """A GPU run's checkpoint (torch AdamW) resumed on the CPU, and the other way round."""
    first, second = _model(), _model()
    src = _torch_adamw(first, O) if direction == "torch to ours" else build_optimizer(first, O, torch.device("cpu"))
    _steps(first, src, 10)
    saved_model = {k: v.clone() for k, v in first.state_dict().items()}
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)                       # through bytes, as the trainer's checkpoint goes
    buf.seek(0)
    saved_opt = torch.load(buf)
    second.load_state_dict(saved_model)
    dst = build_optimizer(second, O, torch.device("cpu")) if direction == "torch to ours" else _torch_adamw(second, O)
    dst.load_state_dict(saved_opt)
    _steps(first, src, 10, first=10)
    _steps(second, dst, 10, first=10)
    assert _same(first, second)


def test_loading_a_state_for_other_parameter_groups_is_refused():
    model = _model()
    opt = build_optimizer(model, O, torch.device("cpu"))
    state = opt.state_dict()
    state["param_groups"] = state["param_groups"][:1]
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict(state)


def test_a_cpu_run_never_imports_torch_dynamo():
    """The reason for the class: a CPU worker's start-up without torch._dynamo's import."""
    code = ("import sys, torch\n"
            "from train.config import OptimConfig\n"
            "from train.optim import build_optimizer\n"
            "from tests.test_optim import _model, _steps\n"
            "m = _model(); o = build_optimizer(m, OptimConfig(), torch.device('cpu')); _steps(m, o, 2)\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
