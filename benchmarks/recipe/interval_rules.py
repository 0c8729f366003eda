"""Other interval rules scored on kept forecast cases, from each case's parts of sigma.

Every `benchmarks/forecast.py` case row from e26c74a on carries the calibrated interval's parts
(`sigma_parts`: bootstrap, scatter, extrapolation, between_laws; `analysis.calibrate.interval_parts`)
and its quantile (Student-t with the ladder's sizes less one degrees of freedom, for every row written
before 5f86f2c; the normal's for a two-init ladder after it). This rescores those
cases under other rules, all in log space (covered when |ln(actual / predicted)| <= the half-width):

    as printed         q * sqrt(sum of every part^2)             (q the row's own quantile: what the forecast printed)
    normal quantile    z_0.95 * sqrt(sum of every part^2)        (the product's rule since 5f86f2c for a ladder
                                                                   whose every run has two or more inits)
    no laws' spread    q * sqrt(bootstrap^2 + scatter^2 + extrapolation^2)
    laws' spread apart q * sqrt(bootstrap^2 + scatter^2 + extrapolation^2) + z_0.95 * between_laws

A second table says whether sigma itself is the size of the misses: the rms of ln(actual / predicted)
/ sigma (1 for a calibrated std) and the 90th percentile of its size (1.645 for a normal: what a 90%
interval of the normal quantile needs). Sets are given as for `pool.py` (LABEL=FILE[,FILE...][@RATIO]);
rows without parts are left out; `--seeds` keeps the rows of some seeds, `--cases` prints every case:

    C=benchmarks/recipe/cases
    python benchmarks/recipe/interval_rules.py "fresh, seeds 34-36 and 13-14=$C/synth_s34.json,$C/synth_s35.json,$C/synth_s36.json,$C/wiki_s13_10x.json,$C/wiki_s14_10x.json"
    python benchmarks/recipe/interval_rules.py "one init=$C/synth_s32.json,$C/synth_s33.json" \
        "two inits=$C/dev_two_inits_synth_s27_33.json" --seeds 32,33

These are scored after the targets' losses were read: a rule chosen from them needs fresh cases.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
from scipy import stats

Z = float(stats.norm.ppf(0.95))


def _pool():
    spec = importlib.util.spec_from_file_location("pool", Path(__file__).with_name("pool.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _stat(p):
    return np.sqrt(p["bootstrap"] ** 2 + p["scatter"] ** 2 + p["extrapolation"] ** 2)


RULES = {
    "as printed": lambda p, q: q * np.sqrt(_stat(p) ** 2 + p["between_laws"] ** 2),
    "normal quantile": lambda p, q: Z * np.sqrt(_stat(p) ** 2 + p["between_laws"] ** 2),
    "no laws' spread": lambda p, q: q * _stat(p),
    "laws' spread apart": lambda p, q: q * _stat(p) + Z * p["between_laws"],
}


def score(rows: list[dict]) -> dict[str, tuple[int, float, float]]:
    """{rule: (cases covered, mean half-width over the median |log error|, mean half-width)} over rows
    carrying parts; half-widths in log space (0.02: about +-2% of the loss)."""
    rows = [r for r in rows if r.get("parts") and r.get("quantile")]
    err = np.abs(np.log1p(np.array([r["err"] for r in rows]) / 100))
    out = {}
    for name, rule in RULES.items():
        hw = np.array([rule(r["parts"], r["quantile"]) for r in rows])
        out[name] = (int((err <= hw).sum()), float(hw.mean() / np.median(err)), float(hw.mean()))
    return out


def z_scores(rows: list[dict]) -> np.ndarray:
    """|ln(actual / predicted)| / sigma of each row carrying parts, sigma the root sum of its parts' squares."""
    rows = [r for r in rows if r.get("parts") and r.get("quantile")]
    err = np.abs(np.log1p(np.array([r["err"] for r in rows]) / 100))
    return err / np.array([np.sqrt(_stat(r["parts"]) ** 2 + r["parts"]["between_laws"] ** 2) for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", help="LABEL=FILE[,FILE...][@RATIO], as for pool.py")
    ap.add_argument("--method", default="auto")
    ap.add_argument("--seeds", default=None, help="keep the rows of these seeds only (comma-separated)")
    ap.add_argument("--cases", action="store_true", help="also every case: its error and each rule's half-width")
    a = ap.parse_args()
    pool = _pool()
    try:
        keep = None if a.seeds is None else {int(s) for s in a.seeds.split(",")}
    except ValueError:
        ap.error(f"--seeds: expected comma-separated integers, got {a.seeds!r}")
    sets = []
    for spec in a.sets:
        label, rows = pool.cases(spec, a.method)
        rows = [r for r in rows if r.get("parts") and r.get("quantile") and (keep is None or r.get("seed") in keep)]
        if not rows:
            raise SystemExit(f"{label}: no rows with sigma's parts{'' if keep is None else f' of seeds {a.seeds}'}")
        sets.append((label, rows))
    print("| cases | n | " + " | ".join(RULES) + " |")
    print("|---|---|" + "---|" * len(RULES))
    for label, rows in sets:
        got = score(rows)
        print(f"| {label} | {len(rows)} | " + " | ".join(f"{c}/{len(rows)}, ±{w:.2%} ({x:.1f}x)"
                                                          for c, x, w in got.values()) + " |")
    print("\n| cases | n | rms of ln(actual/predicted) / sigma | 90th percentile of its size |")
    print("|---|---|---|---|")
    for label, rows in sets:
        z = z_scores(rows)
        print(f"| {label} | {len(z)} | {np.sqrt(np.mean(z ** 2)):.2f} | {np.percentile(z, 90):.2f} |")
    if a.cases:
        print("\n| cases | seed | target | error | " + " | ".join(RULES) + " |")
        print("|---|---|---|---|" + "---|" * len(RULES))
        for label, rows in sets:
            for r in rows:
                hw = [np.expm1(rule(r["parts"], r["quantile"])) for rule in RULES.values()]
                print(f"| {label} | {r.get('seed')} | {r.get('shape')} | {r['err']:+.2f}% | "
                      + " | ".join(f"±{h:.1%}" for h in hw) + " |")


if __name__ == "__main__":
    main()
