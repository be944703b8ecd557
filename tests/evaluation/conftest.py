"""Helpers of the evaluation tests."""

from pathlib import Path


def write(folder: Path, name: str, text: str) -> Path:
    """Write `text` to `folder/name` (folders created); returns the path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
