"""Library logging: loggers under `genpromp_annotate`, no handlers added on import.

The CLI calls `set_verbosity` once; the library never prints.
"""

from __future__ import annotations

import logging
import os

_ROOT = "genpromp_annotate"


def get_logger(name: str) -> logging.Logger:
    """Logger for a module (`get_logger(__name__)`)."""
    if name.startswith(_ROOT + "_"):  # genpromp_annotate_backend.app → genpromp_annotate.backend.app
        name = f"{_ROOT}.{name[len(_ROOT) + 1:]}"
    elif name != _ROOT and not name.startswith(_ROOT + "."):
        name = f"{_ROOT}.{name}"
    return logging.getLogger(name)


def set_verbosity(verbose: int = 0) -> None:
    """0 = warnings, 1 = info, 2+ = debug; GENPROMP_VERBOSITY (an int or a level name) wins when set."""
    env = os.environ.get("GENPROMP_VERBOSITY")
    if env:
        level = int(env) if env.isdigit() else logging.getLevelName(env.upper())
        if isinstance(level, int) and level < 10:
            level = {0: logging.WARNING, 1: logging.INFO}.get(level, logging.DEBUG)
    else:
        level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    root = logging.getLogger(_ROOT)
    root.setLevel(level)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
