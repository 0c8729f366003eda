"""AdamW over K stacked models with per-model hyperparameters, and per-model clipping.

The packed trainer (train/packed.py) updates K models stacked along a leading
dimension. torch.optim.AdamW takes one lr per parameter group; here every model has
its own lr (schedule), weight decay, betas, eps and muP LR multipliers, so the update
is written out. Adam's moments and decoupled decay are elementwise, so one update
over stacked tensors with per-model coefficients is the same arithmetic as K
separate AdamWs (Loshchilov & Hutter 2019, Alg. 2; bias correction by the shared step).

Shapes in names: K models, P one model's parameter count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from train.config import OptimConfig
from train.optim import set_lr


@torch.no_grad()
def clip_per_model(grad_KxP: torch.Tensor, max_norm_K: torch.Tensor) -> torch.Tensor:
    """Clip each model's global gradient norm (row k of the flat gradient) in place; max_norm 0
    leaves a model unclipped. Returns the pre-clip norms (K,).

    Same rule as `torch.nn.utils.clip_grad_norm_` per model: coefficient
    max_norm / (norm + 1e-6), capped at 1.
    """
    total_K = torch.linalg.vector_norm(grad_KxP, dim=1)
    coef_K = torch.clamp(max_norm_K / (total_K + 1e-6), max=1.0)
    coef_K = torch.where(max_norm_K > 0, coef_K, torch.ones_like(coef_K))
    grad_KxP.mul_(coef_K.unsqueeze(1))
    return total_K


@dataclass(frozen=True)
class ModelHparams:
    """One model's AdamW settings for each stacked parameter (by name)."""
    weight_decay: dict[str, float]
    lr_mult: dict[str, float]
    beta1: float
    beta2: float
    eps: float


class PackedAdamW:
    """AdamW over stacked (K, ...) parameters with per-model coefficients, on one flat buffer.

    torch.optim.AdamW takes one lr per parameter group; here every model has its
    own lr (schedule), weight decay, betas and eps along the leading dimension, so
    the update is written out (the same steps as torch's single-tensor AdamW).

    Every parameter is re-pointed to a slice of one (K, P) buffer (P = one model's
    parameter count) and the moments live in (K, P) buffers too, so a step is a
    dozen elementwise kernels over all parameters of all models, however many
    tensors the model has: small kernels are what packing exists to avoid. The
    per-(model, element) LR multipliers and weight decays are precomputed as (K, P)
    rows; all coefficients stay on the device, so a step copies nothing from the host.
    """

    def __init__(self, named_params: dict[str, torch.nn.Parameter], hparams: Sequence[ModelHparams]):
        self.params = named_params
        self.hparams = list(hparams)
        first = next(iter(named_params.values()))
        K, dev = first.shape[0], first.device
        f32 = dict(dtype=torch.float32, device=dev)
        with torch.no_grad():
            self.flat_KxP = torch.cat([p.detach().reshape(K, -1) for p in named_params.values()], dim=1)
        self.slices: dict[str, slice] = {}
        mult, wd, off = [], [], 0
        for n, p in named_params.items():
            size = p[0].numel()
            self.slices[n] = slice(off, off + size)
            p.data = self.flat_KxP[:, off:off + size].view(p.shape)   # the parameter now lives in the buffer
            mult.append(torch.tensor([h.lr_mult[n] for h in hparams], **f32).unsqueeze(1).expand(K, size))
            wd.append(torch.tensor([h.weight_decay[n] for h in hparams], **f32).unsqueeze(1).expand(K, size))
            off += size
        self.mult_KxP = torch.cat(mult, dim=1)
        self.mult_wd_KxP = self.mult_KxP * torch.cat(wd, dim=1)
        # float64 for the bias corrections: 1 - beta2**step loses digits in float32 when beta2 ~ 1
        self.beta1 = torch.tensor([h.beta1 for h in hparams], dtype=torch.float64, device=dev)
        self.beta2 = torch.tensor([h.beta2 for h in hparams], dtype=torch.float64, device=dev)
        self.eps_Kx1 = torch.tensor([h.eps for h in hparams], **f32).unsqueeze(1)
        self.exp_avg_KxP = torch.zeros_like(self.flat_KxP)
        self.exp_avg_sq_KxP = torch.zeros_like(self.flat_KxP)

    def moments(self, name: str) -> dict[str, torch.Tensor]:
        """Views of one parameter's Adam moments, shaped like the (K, ...) parameter."""
        shape, sl = self.params[name].shape, self.slices[name]
        return {"exp_avg": self.exp_avg_KxP[:, sl].view(shape), "exp_avg_sq": self.exp_avg_sq_KxP[:, sl].view(shape)}

    def select(self, named_params: dict[str, torch.nn.Parameter], keep: Sequence[int]) -> "PackedAdamW":
        """The optimizer of a smaller pack holding models `keep` (its parameters `named_params`)."""
        out = PackedAdamW(named_params, [self.hparams[i] for i in keep])
        out.exp_avg_KxP.copy_(self.exp_avg_KxP[list(keep)])
        out.exp_avg_sq_KxP.copy_(self.exp_avg_sq_KxP[list(keep)])
        return out

    def flat_grad(self) -> torch.Tensor:
        """All gradients as one (K, P) tensor (zeros where a parameter got none)."""
        K = self.flat_KxP.shape[0]
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(K, -1)
                          for p in self.params.values()], dim=1)

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self, step: int, lr_K: torch.Tensor, grad_KxP: torch.Tensor) -> None:
        """Apply update number `step` (1-based, for bias correction) with per-model lrs (K,) and the
        (clipped) flat gradient."""
        step_size_Kx1 = (lr_K.double() / (1.0 - self.beta1 ** step)).float().unsqueeze(1)
        bc2_sqrt_Kx1 = torch.sqrt(1.0 - self.beta2 ** step).float().unsqueeze(1)
        b1_Kx1, b2_Kx1 = self.beta1.float().unsqueeze(1), self.beta2.float().unsqueeze(1)
        g, m, v = grad_KxP, self.exp_avg_KxP, self.exp_avg_sq_KxP
        self.flat_KxP.mul_(1 - lr_K.unsqueeze(1) * self.mult_wd_KxP)      # decoupled weight decay
        m.lerp_(g, 1 - b1_Kx1)
        v.mul_(b2_Kx1).add_(g * g * (1 - b2_Kx1))
        denom = (v.sqrt() / bc2_sqrt_Kx1).add_(self.eps_Kx1)
        self.flat_KxP.sub_(m / denom * (step_size_Kx1 * self.mult_KxP))


def model_hparams(single: torch.nn.Module, opt: torch.optim.AdamW, o: OptimConfig) -> ModelHparams:
    """Model `single`'s AdamW settings per parameter name, read from its own optimizer's groups."""
    names = {id(p): n for n, p in single.named_parameters()}
    wd, mult = {}, {}
    for g in opt.param_groups:
        for p in g["params"]:
            wd[names[id(p)]], mult[names[id(p)]] = g["weight_decay"], g["lr_mult"]
    return ModelHparams(wd, mult, o.beta1, o.beta2, o.eps)


# single-run checkpoints <-> the pack: model i's slice of the moments in torch AdamW's layout

def export_adamw_state(single: torch.nn.Module, opt: torch.optim.AdamW, packed_opt: PackedAdamW,
                      i: int, step: int, lr: float) -> dict[str, Any]:
    """Model i's slice of the packed AdamW state as a torch AdamW state dict over `single`."""
    opt.state.clear()
    for n, p in single.named_parameters():
        st = packed_opt.moments(n)
        opt.state[p] = {"step": torch.tensor(float(step)), "exp_avg": st["exp_avg"][i].clone(),
                        "exp_avg_sq": st["exp_avg_sq"][i].clone()}
    set_lr(opt, lr)
    return opt.state_dict()


def import_adamw_state(single: torch.nn.Module, opt: torch.optim.AdamW, packed_opt: PackedAdamW,
                      i: int, step: int) -> None:
    """Copy a loaded torch AdamW state (over `single`) into slice i of the packed state."""
    for n, p in single.named_parameters():
        st = opt.state[p]
        if int(st["step"]) != step:
            raise ValueError(f"optimizer state of {n} is at step {int(st['step'])}, checkpoint at step {step}")
        mine = packed_opt.moments(n)
        mine["exp_avg"][i].copy_(st["exp_avg"])
        mine["exp_avg_sq"][i].copy_(st["exp_avg_sq"])
