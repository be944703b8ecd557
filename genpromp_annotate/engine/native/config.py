"""A checkpoint's config.json with attribute access, and the check that every key holds a value we reproduce."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from genpromp_annotate.engine.native.errors import UnsupportedCheckpoint
from genpromp_annotate.errors import ModelLoadError

# key → what the native modules accept: a set of values, or a predicate
Accepted = frozenset[Any] | Callable[[Any], bool]


class ModuleConfig(dict):
    """config.json as a dict that also reads as attributes (`unet.config.block_out_channels`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; ModelLoadError naming the file when it is missing or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: cannot read the config ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: the config is not a JSON object")
    return data


def checked_config(raw: Mapping[str, Any], defaults: Mapping[str, Any], accepted: Mapping[str, Accepted],
                   source: str) -> ModuleConfig:
    """`defaults` updated with `raw` (keys starting with `_` dropped), after checking that every key the
    modules read or that changes the math holds an accepted value; UnsupportedCheckpoint names the first that
    does not. Keys absent from both `defaults` and `accepted` are refused too: they may change the math."""
    config = dict(defaults)
    config.update({k: v for k, v in raw.items() if not k.startswith("_")})
    for key, value in config.items():
        rule = accepted.get(key)
        if rule is None:
            if key not in defaults:
                raise UnsupportedCheckpoint(f"{source}: config key {key!r} is not implemented natively")
            continue
        ok = rule(value) if callable(rule) else _hashable(value) in rule
        if not ok:
            raise UnsupportedCheckpoint(f"{source}: {key} = {value!r} is not implemented natively")
    return ModuleConfig(config)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
