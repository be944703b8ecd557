"""Commands of this family are registered here (see COMMAND_MODULES in cli/__init__.py)."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """No commands yet."""
