"""Docs cannot drift: README's commands, .ci/run, docs/cli.md and every command's --help agree."""

import re
from pathlib import Path

import pytest

from genpromp_annotate.cli import cli
from genpromp_annotate.cli.docs import cli_reference_markdown, help_text, walk_commands

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
COMMANDS = list(walk_commands(cli))


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.split("## The two commands", 1)[1], flags=re.DOTALL)
    return [block.strip() for block in blocks[:2]]


def test_ci_runs_readme_test_command_verbatim():
    main_job, tests = _readme_commands()
    assert "genpromp-annotate demo" in main_job and "pip install torch==2.13.0" in main_job
    assert "pytest" in tests and "pip install torch==2.13.0" in tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


@pytest.mark.parametrize("full_name, command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_command_has_help_with_an_example(full_name, command):
    text = help_text(full_name, command, cli)
    assert command.help and len(command.help) > 40, f"{full_name}: --help too thin"
    if not hasattr(command, "commands"):  # groups list their sub-commands; leaves show an example
        assert "Example" in text, f"`{full_name} --help` has no Example"
    assert f"genpromp-annotate {full_name.split()[0]}" in README, f"README does not mention `{full_name}`"


def test_cli_reference_is_up_to_date():
    assert (ROOT / "docs" / "cli.md").read_text() == cli_reference_markdown(), \
        "docs/cli.md is stale: python -m genpromp_annotate.cli.docs > docs/cli.md"
