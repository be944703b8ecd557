"""The one error of the native modules: a checkpoint they cannot reproduce exactly (the loader then uses diffusers)."""

from __future__ import annotations


class UnsupportedCheckpoint(ValueError):
    """A config value or weight the native modules do not implement; the message names it."""
