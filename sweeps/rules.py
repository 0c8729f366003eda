"""Per-size hyperparameter rules for sweeps: LR, batch size and weight decay as functions of N (torch-free).

A rule is one of
  - a number (the same value at every size),
  - a formula string in N, e.g. "0.003 * (N / 1e6) ** -0.3", evaluated safely,
  - a power law {"coef": c, "exponent": a, "ref": n0}: c * (N / n0) ** a, the form
    in which fitted optimal-LR / optimal-batch laws are reported (e.g. Porian et
    al. 2024, DeepSeek LLM 2024); the constants are the user's to supply, since
    they depend on data, tokenizer and architecture.

and the AdamW timescale rule (Wang & Aitchison 2024; Bergsma et al. 2025,
"Power Lines", Sec. 2): with peak LR eta, decoupled weight decay lambda, batch
size B and dataset size D in the same unit (both in sequences or both in
tokens, so D / B is the number of optimizer steps),

    tau = B / (eta * lambda * D)      =>      lambda = B / (eta * tau * D)

tau is the fraction of training over which AdamW's exponential moving average
of updates (timescale 1 / (eta * lambda) steps) averages; Power Lines find the
best tau roughly constant for fixed tokens-per-parameter, so one tau tuned at a
small size gives lambda at every other size.
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import dataclass
from typing import Any

# The formula comes from a user's YAML file, so `eval` would run arbitrary code. The
# standard library has no evaluator for a whitelisted expression, so the `ast` tree is
# walked by hand: numbers, named variables, + - * / **, unary +/-, and these functions.
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCS = {"sqrt": math.sqrt, "log": math.log, "log2": math.log2, "log10": math.log10, "exp": math.exp,
          "min": min, "max": max, "abs": abs}
_MAX_POW = 1e3   # refuse absurd exponents (2 ** 10**9 would hang the process)


def eval_formula(formula: str, **variables: float) -> float:
    """Evaluate `formula` with only numbers, the given variables, arithmetic and math functions."""
    if not isinstance(formula, str) or not formula.strip():
        raise ValueError(f"formula must be a non-empty string, got {formula!r}")
    try:
        tree = ast.parse(formula.strip(), mode="eval")
    except SyntaxError as e:
        raise ValueError(f"formula {formula!r} is not a valid expression ({e.msg})") from None
    allowed = f"numbers, {', '.join(variables) or 'no variables'}, + - * / ** and {', '.join(_FUNCS)}"

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in variables:
            return float(variables[node.id])
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > _MAX_POW:
                raise ValueError(f"exponent {right:g} in {formula!r} is too large")
            return _BINOPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords):
            return float(_FUNCS[node.func.id](*(ev(a) for a in node.args)))
        raise ValueError(f"{ast.unparse(node)!r} is not allowed in a formula (use {allowed})")

    try:
        value = ev(tree)
    except (ZeroDivisionError, OverflowError) as e:
        raise ValueError(f"formula {formula!r} cannot be evaluated at {variables}: {e}") from None
    if isinstance(value, complex) or not math.isfinite(value):
        raise ValueError(f"formula {formula!r} gives {value} at {variables}")
    return value


@dataclass(frozen=True)
class PowerLaw:
    """value = coef * (N / ref) ** exponent."""
    coef: float
    exponent: float
    ref: float = 1.0

    def __call__(self, n_params: float) -> float:
        return self.coef * (n_params / self.ref) ** self.exponent


def rule_value(rule: Any, n_params: float, key: str = "rule") -> float:
    """Evaluate a rule (number, formula string or power-law mapping) at N; the value must be positive.

    `key` names the setting in errors (e.g. "rules.optim.lr")."""
    if not n_params > 0:
        raise ValueError(f"{key}: N must be positive, got {n_params}")
    if isinstance(rule, bool):
        raise ValueError(f"{key}: a rule must be a number, a formula string or {{coef, exponent, ref}}, got {rule!r}")
    if isinstance(rule, (int, float)):
        value = float(rule)
    elif isinstance(rule, str):
        try:
            value = eval_formula(rule, N=float(n_params))
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
    elif isinstance(rule, PowerLaw):
        value = rule(n_params)
    elif isinstance(rule, dict):
        unknown = set(rule) - {"coef", "exponent", "ref"}
        if unknown or not {"coef", "exponent"} <= set(rule):
            raise ValueError(f"{key}: a power-law rule needs keys coef and exponent (and optionally ref), got {sorted(rule)}")
        value = PowerLaw(float(rule["coef"]), float(rule["exponent"]), float(rule.get("ref", 1.0)))(n_params)
    else:
        raise ValueError(f"{key}: a rule must be a number, a formula string or {{coef, exponent, ref}}, got {rule!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{key}: rule {rule!r} gives {value:g} at N={n_params:g}; it must be a positive number")
    return value


def lr_for(n_params: float, rule: Any) -> float:
    """Peak learning rate at N from a rule; a non-positive LR is an error naming optim.lr."""
    return rule_value(rule, n_params, key="optim.lr")


def batch_tokens_for(n_params: float, rule: Any, context: int, key: str = "train.batch_tokens") -> int:
    """Tokens per optimizer step at N from a rule, rounded to a whole number (>= 1) of sequences."""
    if context <= 0:
        raise ValueError(f"model.context must be positive, got {context}")
    tokens = rule_value(rule, n_params, key=key)
    return max(1, round(tokens / context)) * context


def timescale(lr: float, weight_decay: float, batch: float, dataset: float) -> float:
    """AdamW timescale as a fraction of training, tau = B / (eta * lambda * D) (Power Lines, Sec. 2)."""
    _positive(lr=lr, weight_decay=weight_decay, batch=batch, dataset=dataset)
    return batch / (lr * weight_decay * dataset)


def weight_decay_for_timescale(tau: float, lr: float, batch: float, dataset: float) -> float:
    """Decoupled weight decay giving timescale tau: lambda = B / (eta * tau * D) (B and D in one unit)."""
    _positive(tau=tau, lr=lr, batch=batch, dataset=dataset)
    if batch > dataset:
        raise ValueError(f"batch={batch:g} exceeds the dataset size {dataset:g}: use one unit for both")
    return batch / (lr * tau * dataset)


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not (isinstance(v, (int, float)) and v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a positive number, got {v!r}")
