"""Write the history of checked forecasts a preset ships (`testbed/histories/NAME.json`) from the matrix's rows.

The rows are `benchmarks/forecast.py`'s cases (one per seed, target and method; committed under
benchmarks/recipe/cases/). The method the preset uses (its `fit.law`, e.g. auto) is kept, on one corpus
(`--data`, the rows' `data`), with each row's seed, target shape, forecast, actual loss and compute ratio.
The file records the preset's `recipe_key`, so the demo uses it only while the preset's recipe is the one
these forecasts were made with; every row must come from that recipe, which the caller vouches for.

    C=benchmarks/recipe/cases
    python benchmarks/recipe/ship_history.py --preset cpu --data synthetic --out testbed/histories/cpu.json \\
        $C/dev_two_inits_synth_s27_33.json $C/synth_s3[4-9].json $C/synth_s4[0-5].json

`--check` compares with the file instead of writing it (exit 1 when they differ).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analysis.history import load_history  # noqa: E402
from testbed.preset import load_preset, recipe_key  # noqa: E402

KEEP = ("seed", "data", "shape", "predicted", "actual", "compute_ratio")


def build(preset_name: str, data: str, files: list[str]) -> dict:
    preset = load_preset(preset_name)
    rows = [r for r in load_history(files, law=preset.fit.law) if str(r.get("data")) == data]
    if not rows:
        raise SystemExit(f"no checked {preset.fit.law} forecast on data {data!r} in the files given")
    rows.sort(key=lambda r: (r["seed"], float(r["compute_ratio"]), r["shape"]))
    seen = set()
    for r in rows:
        if (r["seed"], r["shape"]) in seen:
            raise SystemExit(f"seed {r['seed']} target {r['shape']} appears twice in the files given")
        seen.add((r["seed"], r["shape"]))
    return {"preset": preset.name, "recipe": recipe_key(preset), "data": data, "method": preset.fit.law,
            "about": (f"{len(rows)} checked forecasts of the {preset.name} preset's recipe on {data} data, seeds "
                      f"{rows[0]['seed']}-{rows[-1]['seed']}, each forecast from its seed's ladder alone "
                      "(benchmarks/forecast.py), then checked against the trained target "
                      "(benchmarks/recipe/README.md, sections (27)-(30)); written by "
                      "benchmarks/recipe/ship_history.py from the sources, in benchmarks/recipe/cases"),
            "sources": [Path(f).name for f in files],
            "records": [{**{k: r[k] for k in KEEP}, "method": preset.fit.law} for r in rows]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="cases JSON files (benchmarks/forecast.py rows)")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--data", required=True, help="the corpus label of the rows to keep (e.g. synthetic)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    a = ap.parse_args(argv)
    d = build(a.preset, a.data, a.files)
    head = json.dumps({k: v for k, v in d.items() if k != "records"}, indent=1)[:-2]
    text = head + ',\n "records": [\n' + ",\n".join("  " + json.dumps(r) for r in d["records"]) + "\n ]\n}\n"
    if a.check:
        same = Path(a.out).exists() and Path(a.out).read_text() == text
        print(f"{a.out}: {'up to date' if same else 'differs from what the files give'}")
        return 0 if same else 1
    Path(a.out).write_text(text)
    print(f"{a.out}: {d['about']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
