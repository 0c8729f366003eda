"""The README's Python API example runs as written (load -> fit -> forecast -> backtest), on a sweep."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fake_runs import write_sweep

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_the_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'load("runs/my-sweep")' in code
    write_sweep(tmp_path / "runs" / "my-sweep", sizes=(1e5, 3e5, 1e6, 3e6), token_mults=(5, 20, 80), noise=0.003)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    out = capsys.readouterr().out
    assert out.startswith("FitResult(chinchilla")
    fc = namespace["fc"].point(0)
    assert fc["lower"] < fc["loss"] < fc["upper"] and fc["interval"] == "bootstrap"
    assert list(namespace["board"]["law"])[0] in ("chinchilla", "kaplan", "compute") and "far_err" in out
