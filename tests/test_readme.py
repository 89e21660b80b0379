"""The README's commands are the ones CI runs: a drift between them would let CI test something else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_block(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(rf"{re.escape(heading)}.*?```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert match, f"README.md has no code block under {heading!r}"
    return match.group(1).strip()


def test_readme_test_command_is_what_ci_runs() -> None:
    command = _readme_block("### Run the tests")
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci_lines, f".ci/run does not run the README's test command verbatim:\n{command}"


def test_readme_serve_command_installs_without_training_extras() -> None:
    command = _readme_block("### Run the service")
    assert "torch" not in command and "[train" not in command, command
    assert "python -m service" in command
