"""The product's module import graph: imports that point up the layering, imports of CLI modules, cycles.

Layers (../shared/DESIGN.md): models <- train <- sweeps; analysis beside sweeps (it may read torch-free
modules of train and models); testbed on top. An import is counted when it names a product module
(`import a.b`, `from a.b import c`, `from a import b` for a submodule b), at module level or inside a
function.

    python benchmarks/import_graph.py [ROOT]
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

RANK = {"models": 0, "train": 1, "sweeps": 2, "analysis": 2, "testbed": 3}


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for pkg in RANK:
        for f in (root / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(root).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
                names = subs if len(subs) == len(node.names) else [node.module, *subs]
            else:
                continue
            edges[m].update(n for n in names if n in mods and n != m)
    return edges


def bad_imports(edges: dict[str, set[str]]) -> list[str]:
    out = []
    for m, deps in sorted(edges.items()):
        for d in sorted(deps):
            a, b = m.split(".")[0], d.split(".")[0]
            if RANK[b] > RANK[a] or (a == "analysis" and b == "sweeps"):
                out.append(f"{m} -> {d}  (upward)")
            if d.split(".")[-1] == "cli" and a != "testbed" and not m.endswith("__main__"):
                out.append(f"{m} -> {d}  (a CLI module)")
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return found


def main() -> None:
    edges = graph(modules(Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
    bad, loops = bad_imports(edges), cycles(edges)
    print(f"{len(edges)} modules; upward or CLI imports: {len(bad)}; cycles: {len(loops)}")
    for line in bad:
        print("  ", line)
    for comp in loops:
        print("   cycle:", " <-> ".join(comp))


if __name__ == "__main__":
    main()
