"""A safe evaluator for per-size rule formulas such as "0.003 * (N / 1e6) ** -0.3".

Used when `models.rules` is not available. Only numbers, the variable N, the
arithmetic operators and a few math functions are allowed: the formula comes
from a user's YAML file, so `eval` on it would run arbitrary code. The parse
is done with `ast` and walked by hand because nothing in the standard library
evaluates a whitelisted expression.
"""
from __future__ import annotations

import ast
import math
import operator

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCS = {"sqrt": math.sqrt, "log": math.log, "log2": math.log2, "log10": math.log10, "exp": math.exp,
          "min": min, "max": max, "round": round}


def eval_formula(formula: str, **variables: float) -> float:
    tree = ast.parse(formula, mode="eval")

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.Name) and node.id in variables:
            return variables[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](ev(node.operand))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords):
            return _FUNCS[node.func.id](*(ev(a) for a in node.args))
        raise ValueError(f"{ast.unparse(node)!r} is not allowed (use numbers, {', '.join(variables)}, + - * / ** "
                         f"and {', '.join(_FUNCS)})")

    return float(ev(tree))
