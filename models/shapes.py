"""The shape rule: from a target size (or a width) to (width, depth, heads).

GPT rule (fixed aspect ratio). Kaplan et al. 2020 (Sec. 3.1, Fig. 5) find the
loss nearly flat in the aspect ratio width/depth over roughly 20-200 at fixed
N, and model ladders (GPT-2/3, OLMo) sit near 64 (GPT-2 small: 768/12). So:

    width  = a multiple of `head_dim` (heads = width / head_dim)
    depth  = max(1, round(width / aspect))          aspect = 64 by default

so depth grows slowly (linearly in width, N ~ 12 width^3 / aspect), and tiny
CPU models get one or two blocks. Target sizes are non-embedding parameter
counts (the Kaplan N), which do not depend on vocabulary or context.

LSTM rule: fixed depth (`lstm_depth`, 2 by default, as in the LSTM baselines
of Kaplan et al. 2020, Fig. 7), width a multiple of `multiple` (16).

Counts come from `models.counting.param_counts` on a template ModelConfig, so
the rule honours the template's MLP kind/ratio, norm and bias.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from models.config import ModelConfig
from models.counting import param_counts

MAX_WIDTH = 8192
SLACK = 2.0       # a ladder's rungs may overshoot the requested range by at most this factor


@dataclass(frozen=True)
class ModelShape:
    width: int
    depth: int
    heads: int          # 0 for the LSTM

    def apply(self, template: ModelConfig) -> ModelConfig:
        """The template with this shape (heads explicit, so head_dim no longer matters)."""
        return dataclasses.replace(template, width=self.width, depth=self.depth, heads=self.heads)


def _template(kind: str, template: ModelConfig | None) -> ModelConfig:
    t = template or ModelConfig()
    return dataclasses.replace(t, kind=kind, vocab_size=max(t.vocab_size, 1),
                               parametrization="sp", mup_base_width=0)


def _shape_at_width(width: int, kind: str, head_dim: int, aspect: float, lstm_depth: int) -> ModelShape:
    if kind == "lstm":
        return ModelShape(width, lstm_depth, 0)
    return ModelShape(width, max(1, round(width / aspect)), width // head_dim)


def _check(kind: str, head_dim: int, aspect: float, lstm_depth: int) -> None:
    if kind not in ("gpt", "lstm"):
        raise ValueError(f"kind must be gpt or lstm, got {kind!r}")
    if head_dim <= 0:
        raise ValueError(f"head_dim must be positive, got {head_dim}")
    if aspect <= 0:
        raise ValueError(f"aspect must be positive, got {aspect}")
    if lstm_depth <= 0:
        raise ValueError(f"lstm_depth must be positive, got {lstm_depth}")


def candidates(kind: str = "gpt", head_dim: int = 32, aspect: float = 64.0, lstm_depth: int = 2,
               multiple: int = 16, template: ModelConfig | None = None) -> list[tuple[int, ModelShape]]:
    """Every shape the rule allows, as (non-embedding params, shape), increasing."""
    _check(kind, head_dim, aspect, lstm_depth)
    step = head_dim if kind == "gpt" else multiple
    base = _template(kind, template)
    out = []
    for width in range(step, MAX_WIDTH + 1, step):
        shape = _shape_at_width(width, kind, head_dim, aspect, lstm_depth)
        out.append((param_counts(shape.apply(base))["non_embedding"], shape))
    return out


def shape_for(n_params: float | None = None, width: int | None = None, kind: str = "gpt",
              head_dim: int = 32, aspect: float = 64.0, lstm_depth: int = 2, multiple: int = 16,
              template: ModelConfig | None = None) -> ModelShape:
    """The rule's shape nearest (in log N) to `n_params` non-embedding params, or at `width`."""
    if (n_params is None) == (width is None):
        raise ValueError("give exactly one of n_params or width")
    _check(kind, head_dim, aspect, lstm_depth)
    if width is not None:
        step = head_dim if kind == "gpt" else multiple
        if width <= 0 or width % step:
            raise ValueError(f"width={width} must be a positive multiple of {step} for kind={kind}")
        return _shape_at_width(width, kind, head_dim, aspect, lstm_depth)
    if not n_params > 0:
        raise ValueError(f"n_params must be positive, got {n_params}")
    cands = candidates(kind, head_dim, aspect, lstm_depth, multiple, template)
    return min(cands, key=lambda c: abs(math.log(c[0] / n_params)))[1]


def size_ladder(min_params: float, max_params: float, n: int, kind: str = "gpt", head_dim: int = 32,
                aspect: float = 64.0, lstm_depth: int = 2, multiple: int = 16,
                template: ModelConfig | None = None) -> list[ModelShape]:
    """n distinct, increasing shapes whose non-embedding sizes are as close as possible (least squares
    in log N) to n log-spaced targets from min_params to max_params.

    The rule's sizes are discrete (coarse at the small end), so nearest-per-target could repeat
    a shape; a dynamic program picks the best strictly increasing assignment instead.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < min_params <= max_params:
        raise ValueError(f"need 0 < min_params <= max_params, got {min_params}, {max_params}")
    if n > 1 and min_params == max_params:
        raise ValueError("min_params == max_params gives one size; ask for n=1")
    cands = candidates(kind, head_dim, aspect, lstm_depth, multiple, template)
    targets = [math.exp(math.log(min_params) + i * (math.log(max_params / min_params)) / max(n - 1, 1))
               for i in range(n)]
    logn = [math.log(c[0]) for c in cands]
    # only sizes within a factor SLACK of the requested range may be used
    idx = [j for j in range(len(cands)) if min_params / SLACK <= cands[j][0] <= max_params * SLACK]
    if len(idx) < n:
        raise ValueError(f"only {len(idx)} distinct {kind} shapes lie within [{min_params:.3g}, {max_params:.3g}] "
                         f"non-embedding params (x/÷ {SLACK}); ask for fewer sizes, a wider range or a smaller "
                         f"head_dim/multiple")
    inf = float("inf")
    # cost[i][k]: best total squared log error placing targets 0..i with target i on idx[k]
    cost = [[inf] * len(idx) for _ in range(n)]
    back = [[-1] * len(idx) for _ in range(n)]
    for k, j in enumerate(idx):
        cost[0][k] = (logn[j] - math.log(targets[0])) ** 2
    for i in range(1, n):
        best, best_k = inf, -1
        for k, j in enumerate(idx):
            if k > 0 and cost[i - 1][k - 1] < best:
                best, best_k = cost[i - 1][k - 1], k - 1
            if best < inf:
                cost[i][k] = best + (logn[j] - math.log(targets[i])) ** 2
                back[i][k] = best_k
    k = min(range(len(idx)), key=lambda kk: cost[n - 1][kk])
    if cost[n - 1][k] == inf:
        raise ValueError(f"cannot place {n} distinct {kind} sizes in [{min_params:.3g}, {max_params:.3g}]")
    chosen = []
    for i in range(n - 1, -1, -1):
        chosen.append(cands[idx[k]][1])
        k = back[i][k]
    return chosen[::-1]
