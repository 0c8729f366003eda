"""The one forecast (analysis.predict.forecast) and what it rests on: fit files old and new, the
schedule features of a run, the law's plain form, and an import graph without cycles."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from analysis.fitresult import FitResult
from analysis.laws import LAWS, kaplan_schedule_params
from analysis.predict import forecast

REPO = Path(__file__).resolve().parents[1]
FORMAT1 = REPO / "tests" / "data" / "fit_format1_chinchilla_calibrated.json"
# what `testbed predict` printed from FORMAT1 with the code that wrote it (format 1)
FORMAT1_PREDICTED = {
    ("N", "D"): {"loss": 2.163322081982917, "lower": 2.1422185975404826, "upper": 2.1846334616682195,
                 "interval": "calibrated", "extrapolation": 2.7777659259764937, "sigma": 0.005959813758548464},
    ("C",): {"loss": 1.991032331726752, "lower": 1.9005979944751228, "upper": 2.0857697195855667,
             "interval": "calibrated", "N": 19396694.1570135, "D": 8592529495.878193,
             "extrapolation": 231.4804938313745, "sigma": 0.02826068687134631},
}


def test_a_format1_fit_file_is_read_with_its_extrapolation_error_and_forecasts_the_same(tmp_path):
    raw = json.loads(FORMAT1.read_text())
    assert raw["format_version"] == 1 and "extrapolation_error" in raw["settings"]
    result = FitResult.from_json(FORMAT1)
    assert result.extrapolation is not None and result.extrapolation.C_fit == raw["settings"]["extrapolation_error"]["C_fit"]
    assert "extrapolation_error" not in result.settings
    for at, want in (({"N": 1e7, "D": 2e8}, FORMAT1_PREDICTED[("N", "D")]), ({"C": 1e18}, FORMAT1_PREDICTED[("C",)])):
        got = forecast(result, at).point(0)
        assert got.pop("interval") == want["interval"]
        parts = {k: got.pop(k) for k in list(got) if k.startswith("sigma_")}   # reported since the file was written
        assert got == pytest.approx({k: v for k, v in want.items() if k != "interval"}, rel=1e-12)
        assert sorted(parts) == ["sigma_between_laws", "sigma_bootstrap", "sigma_extrapolation", "sigma_scatter"]
        assert np.sqrt(sum(v ** 2 for v in parts.values())) == pytest.approx(got["sigma"], rel=1e-12)
    # written again, it is format 2 with a typed field, and reads back equal
    again = FitResult.from_json(result.to_json(tmp_path / "fit.json"))
    stored = json.loads((tmp_path / "fit.json").read_text())
    assert stored["format_version"] == 2 and stored["extrapolation"]["s0"] == result.extrapolation.s0
    assert again == result


def test_fit_result_repr_is_one_short_line():
    result = FitResult.from_json(FORMAT1)
    text = repr(result)
    assert "\n" not in text and len(text) < 300 and "8 bootstrap samples" in text
    assert "alpha=" in text and "s0=" in text


def test_every_law_kernel_is_its_plain_form():
    rng = np.random.default_rng(0)
    cov = {"N": np.geomspace(1e6, 1e10, 7), "D": np.geomspace(1e8, 1e12, 7)[::-1], "C": np.geomspace(1e15, 1e22, 7),
           "M": np.geomspace(1.0, 300.0, 7), "S1": np.geomspace(1e7, 1e10, 7), "S2": np.linspace(0.0, 3e6, 7)}
    params = {"chinchilla": {"E": 1.8, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.28},
              "kaplan": {"Nc": 8.8e13, "Dc": 5.4e13, "alpha_N": 0.076, "alpha_D": 0.095},
              "compute": {"E": 1.7, "A": 40.0, "gamma": 0.1},
              "overtrain": {"E": 1.9, "a": 300.0, "b": 600.0, "eta": 0.15},
              "schedule": {"E": 1.7, "A_N": 300.0, "alpha_N": 0.35, "A": 500.0, "alpha": 0.3, "C": 1e-8},
              "kaplan-schedule": kaplan_schedule_params(Nc=8.8e13, Sc=5.4e13, alpha_N=0.076, alpha_S=0.095, C=1e-9)}
    assert set(params) == set(LAWS)
    for name, law in LAWS.items():
        P = law.as_natural(params[name]) * np.exp(0.05 * rng.standard_normal((3, law.n_params)))
        x = {c: cov[c] for c in law.covariates}
        np.testing.assert_allclose(law.predict(P, **x), law.loss(P, **x), rtol=1e-12, err_msg=name)


def test_analysis_imports_form_no_cycle_and_no_module_imports_a_command_line():
    graph = {}
    for path in (REPO / "analysis").glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("analysis."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.ImportFrom) and node.module == "analysis":
                deps |= {a.name for a in node.names}
        graph[path.stem] = deps - {path.stem}
    assert not {m for m, d in graph.items() if "cli" in d} - {"__main__"}, "a library module imports the CLI"

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for d in graph.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        return seen
    cyclic = sorted(m for m in graph if m in reach(m))
    assert not cyclic, f"import cycle through {cyclic}"
