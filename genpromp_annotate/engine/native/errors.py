"""Errors raised by the native (plain-torch) inference modules."""

from __future__ import annotations


class UnsupportedCheckpoint(ValueError):
    """A checkpoint uses a config value (or tensor) the native modules cannot reproduce exactly.

    The message names the offending config key and value (or state-dict key) so that
    the loader can log it and fall back to diffusers.
    """
