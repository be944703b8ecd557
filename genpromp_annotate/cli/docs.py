"""Render docs/cli.md from every command's --help: `python -m genpromp_annotate.cli.docs > docs/cli.md`."""

from __future__ import annotations

from collections.abc import Iterator

import click


def walk_commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """(full name, command) for every command and sub-command, sorted by name."""
    for name in sorted(group.commands):
        command = group.commands[name]
        full = f"{prefix}{name}"
        yield full, command
        if isinstance(command, click.Group):
            yield from walk_commands(command, prefix=f"{full} ")


def help_text(full_name: str, command: click.Command, root: click.Group) -> str:
    """The exact text `genpromp-annotate FULL_NAME --help` prints."""
    parts = full_name.split()
    ctx = click.Context(root, info_name="genpromp-annotate")
    group: click.Command = root
    for part in parts:
        assert isinstance(group, click.Group)
        group = group.commands[part]
        ctx = click.Context(group, info_name=part, parent=ctx)
    ctx.max_content_width = 100
    return command.get_help(ctx)


def cli_reference_markdown() -> str:
    from genpromp_annotate.cli import cli

    lines = ["# Command reference", "", "Generated from `--help` by `python -m genpromp_annotate.cli.docs > docs/cli.md`;",
             "a test fails when this file is stale.", ""]
    for full, command in walk_commands(cli):
        lines += [f"## genpromp-annotate {full}", "", "```text", help_text(full, command, cli).rstrip(), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(cli_reference_markdown(), end="")
