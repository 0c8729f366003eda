"""The `testbed` command's conventions: --version, did-you-mean for commands, keys, presets and laws,
and a closed pipe that is not an error."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from testbed.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"testbed (scaling-testbed) {importlib.metadata.version('scaling-testbed')}"


def test_a_misspelt_command_gets_a_suggestion(capsys):
    assert main(["sweap"]) == 2
    assert "unknown command 'sweap' (did you mean 'sweep'?)" in capsys.readouterr().err


def test_an_unknown_command_exits_2_from_the_shell_too():
    """Mutations cli_unknown_command_exit_0, cli_module_exit_code_lost: `testbed nosuch` is bad input (exit 2, one
    line naming it, then the usage), also through `python -m testbed`, which must pass the code on."""
    from train.contract import EXIT_BAD_INPUT

    r = subprocess.run([sys.executable, "-m", "testbed", "nosuch"], capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_BAD_INPUT == 2
    assert r.stderr.splitlines()[0] == "testbed: unknown command 'nosuch'" and "usage: testbed" in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("argv,hint", [
    (["train", "--out", "{tmp}/r", "optim.lrr=3e-3"], "(did you mean 'optim.lr'?)"),
    (["train", "{tmp}/c.yaml", "--out", "{tmp}/r"], "unknown config key 'model.widht' (did you mean 'model.width'?)"),
    (["sweep", "plan", "cpu_demo_ladderr"], "(did you mean 'cpu_demo_ladder'?)"),
    (["sweep", "plan", "{tmp}/s.yaml"], "unknown sweep key 'familly' (did you mean 'family'?)"),
])
def test_misspelt_keys_and_presets_get_a_suggestion(tmp_path, capsys, argv, hint):
    (tmp_path / "c.yaml").write_text("model: {widht: 64}\n")
    (tmp_path / "s.yaml").write_text("name: s\nfamilly: grid\n")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert hint in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_misspelt_law_gets_a_suggestion():
    from analysis.laws import get_law
    with pytest.raises(ValueError, match=r"unknown law 'chinchila' \(did you mean 'chinchilla'\?\)"):
        get_law("chinchila")


def test_output_cut_short_by_a_pipe_is_not_an_error():
    # the reader exits before the command writes (as `| head` does once it has its lines)
    r = subprocess.run(f"{sys.executable} -m testbed --help | true", shell=True,
                       capture_output=True, text=True, timeout=120)
    assert "BrokenPipeError" not in r.stderr and "Traceback" not in r.stderr, r.stderr
