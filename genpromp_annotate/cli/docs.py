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
    """The exact text `genpromp-annotate FULL_NAME --help` prints, at a fixed width of 100 columns."""
    # make_context applies each command's context_settings (e.g. -h as a help option), as a real call does
    ctx = root.make_context("genpromp-annotate", [], resilient_parsing=True)
    ctx.terminal_width = ctx.max_content_width = 100
    group: click.Command = root
    for part in full_name.split():
        assert isinstance(group, click.Group)
        group = group.commands[part]
        ctx = group.make_context(part, [], parent=ctx, resilient_parsing=True)
        ctx.terminal_width = ctx.max_content_width = 100
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
