"""How a project's LocalizeConfig is stored: its preset name plus the fields that differ from it (JSON)."""

from __future__ import annotations

from typing import Any

from genpromp_annotate.presets import LocalizeConfig, preset
from genpromp_annotate.store.models import Project

# Project settings that are tuples in LocalizeConfig but lists in JSON.
_TUPLE_SETTINGS = ("timesteps", "resolutions", "resolution_weights")


def project_settings(config: LocalizeConfig) -> dict[str, Any]:
    """The JSON settings a project stores: its preset name plus every field that differs from the preset."""
    base = preset(config.preset).as_dict() if config.preset else LocalizeConfig().as_dict()
    settings: dict[str, Any] = {"preset": config.preset}
    for key, value in config.as_dict().items():
        if key != "preset" and base.get(key) != value:
            settings[key] = list(value) if isinstance(value, tuple) else value
    return settings


def config_for_project(project: Project) -> LocalizeConfig:
    """The LocalizeConfig a project's boxes are made with (its preset + stored overrides)."""
    settings = dict(project.settings or {})
    base = preset(settings.pop("preset", "paper"))
    for key in _TUPLE_SETTINGS:
        if key in settings and settings[key] is not None:
            settings[key] = tuple(settings[key])
    return base.replace(**settings)
