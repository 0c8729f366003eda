"""What the command lines print: a fit's parameter table and a data frame, as rich tables."""
from __future__ import annotations


def print_fit(result) -> None:
    """The parameter table (estimate, interval, bootstrap SE) with fit diagnostics, via rich."""
    from rich.console import Console
    from rich.table import Table

    has_samples = result.samples is not None and len(result.samples) > 1
    se = result.standard_errors() if has_samples else {}
    level = f"{result.interval_level:.0%} interval" if result.interval_level else "interval"
    table = Table(title=f"{result.versioned_law} on {result.n_points} points "
                        f"(N: {result.convention.get('N')} parameters, {result.convention.get('N_source') or 'given'})")
    for col in ("parameter", "estimate", level, "bootstrap SE"):
        table.add_column(col, justify="right" if col != "parameter" else "left")
    for name, value in result.params.items():
        iv = result.intervals.get(name)
        table.add_row(name, f"{value:.6g}", f"[{iv[0]:.4g}, {iv[1]:.4g}]" if iv else "-",
                      f"{se[name]:.3g}" if name in se else "-")
    console = Console()
    console.print(table)
    status = "converged" if result.converged else "NOT converged"
    resid = ", ".join(f"{k} {v:.4g}" for k, v in result.residuals.items() if isinstance(v, (int, float)))
    console.print(f"objective {result.objective:.6g} ({status}); residuals: {resid}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def print_fit_warnings(result) -> None:
    """A forecast repeats, on stderr, what the fit it comes from warned about (a fit's caveats hold for its forecasts)."""
    import sys

    for w in result.warnings:
        print(f"warning from the fit: {w}", file=sys.stderr)


def print_frame(frame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for c in frame.columns:
        t.add_column(str(c))
    for row in frame.itertuples(index=False):
        t.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console(width=200).print(t)


def print_table(head: list[str], rows: list[list[str]], title: str, markdown: bool = False) -> None:
    """Rows of already formatted cells: a Markdown table (for benchmarks/README.md) or a rich table."""
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for col in head:
        t.add_column(col, justify="right")
    for row in rows:
        t.add_row(*row)
    Console(width=220).print(t)


def print_run_forecast(law: str, run_id: str, out: dict, level: float) -> None:
    """A planned run's forecast (`analysis.predict.forecast(...).run()`): its curve as a table, then the final loss."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{law}: forecast of {run_id} (N={out['N']:.4g}, D={out['D']:.4g})")
    for col in ("step", "tokens", "loss", f"{level:.0%} interval ({out['interval']})"):
        t.add_column(col, justify="right")
    c = out["curve"]
    for s, tok, p, lo, hi in zip(c["steps"], c["tokens"], c["loss"], c["lower"], c["upper"]):
        if p is not None:
            t.add_row(str(s), f"{tok:.4g}", f"{p:.4f}", f"[{lo:.4f}, {hi:.4f}]" if lo is not None else "-")
    Console().print(t)
    print(f"{law}: final loss {out['loss']:.4f}  [{out['lower']:.4f}, {out['upper']:.4f}] ({level:.0%}, {out['interval']})")
    if out.get("sigma_parts"):
        print(f"  {sigma_line(out['sigma'], out['sigma_parts'])}")
    print(f"note: {out['note']}")


PART_NAMES = {"bootstrap": "parameters (bootstrap)", "scatter": "run scatter s0",
              "extrapolation": "extrapolation k*ln(C/C_fit)", "between_laws": "laws apart"}


def sigma_line(sigma: float, parts: dict[str, float]) -> str:
    """What a calibrated interval is made of, largest part first: its sigma (the std of the log
    forecast) and each part's share of sigma^2 (`analysis.calibrate.interval_parts`)."""
    total = sum(v ** 2 for v in parts.values()) or 1.0
    shown = ", ".join(f"{PART_NAMES.get(k, k)} {v:.2%} ({v ** 2 / total:.0%})"
                      for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v > 0)
    return f"interval sigma {sigma:.2%} of the loss: {shown or 'none'}"
