"""A project's effective LocalizeConfig: its stored settings (`store.settings`), then any overrides (e.g. a
Label Studio config); and the ω list a server re-calibrates over."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.presets import LocalizeConfig, preset
from genpromp_annotate.store.settings import config_for_project, project_settings

__all__ = ["calibrate_omegas", "config_for_project", "effective_config", "project_settings"]

def effective_config(stored: LocalizeConfig, preset_name: str | None = None,
                     changes: Mapping[str, Any] | None = None) -> LocalizeConfig:
    """The config boxes are made with: `stored`, or the named preset instead (the project's seed kept),
    with `changes` (e.g. τ, ω, multi-box from a Label Studio config) on top."""
    base = preset(preset_name).replace(seed=stored.seed) if preset_name else stored
    return base.replace(**dict(changes or {}))


def calibrate_omegas(value: str | None) -> tuple[float, ...]:
    """`GENPROMP_CALIBRATE_OMEGAS`, e.g. "0.4,0.5,0.7": the ω values re-calibration also tries."""
    if not value or not value.strip():
        return ()
    try:
        omegas = tuple(float(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise ConfigError(f"GENPROMP_CALIBRATE_OMEGAS: expected comma-separated numbers, got {value!r}") from None
    bad = [w for w in omegas if not 0.0 <= w <= 1.0]
    if bad:
        raise ConfigError(f"GENPROMP_CALIBRATE_OMEGAS: ω must lie in [0, 1], got {bad[0]}")
    return omegas
