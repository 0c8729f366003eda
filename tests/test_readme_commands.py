"""The README's command reference against each command's own --help: every option a command
accepts is named in the Command line section, and every option that section gives a command exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from testbed.cli import main as run_testbed

README = Path(__file__).resolve().parents[1] / "README.md"
# options named in a row that belong to another command (`--calibrate` is fit's, `--pack` sweep run's)
OTHER_COMMANDS = {"predict": {"--calibrate"}, "train": {"--pack"}}


def command_section() -> str:
    text = README.read_text()
    return text.split("\n## Command line", 1)[1].split("\n## ", 1)[0]


def options(command: str, capsys) -> set[str]:
    try:
        code = run_testbed([*command.split(), "--help"])
    except SystemExit as e:
        code = e.code
    assert code in (0, None)
    usage = capsys.readouterr().out.split("\n\n", 1)[0]
    return set(re.findall(r"\[(--[A-Za-z][a-z0-9-]*)", usage)) | set(re.findall(r"^usage: .*? (--[A-Za-z][a-z0-9-]*) ", usage))


def rows(command: str) -> str:
    return "\n".join(line for line in command_section().splitlines() if line.startswith(f"| `testbed {command} ")
                     or line.startswith(f"| `testbed {command}`"))


@pytest.mark.parametrize("command", ["fit", "predict", "backtest", "report", "sweep plan", "sweep run",
                                     "sweep status", "train", "demo"])
def test_the_readme_names_every_option_of_each_command_and_no_other(command, capsys):
    accepted = options(command, capsys)
    assert accepted, command
    section = command_section()
    undocumented = sorted(o for o in accepted - {"--help"} if not re.search(re.escape(o) + r"(?![a-z-])", section))
    assert not undocumented, f"testbed {command}: options not in the README's command reference: {undocumented}"
    named = set(re.findall(r"(--[A-Za-z][a-z0-9-]*)", rows(command))) - OTHER_COMMANDS.get(command, set())
    assert named <= accepted, f"testbed {command}: the README names options it lacks: {sorted(named - accepted)}"
