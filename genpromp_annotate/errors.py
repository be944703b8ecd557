"""Every user-facing failure is a GenprompError; the CLI turns them into one-line messages."""

from __future__ import annotations


class GenprompError(Exception):
    """Base class: the message names the file, field or id, what was expected and what was found."""


class ModelLoadError(GenprompError):
    """A model source is missing, is not Stable Diffusion, or cannot be read."""


class ImageError(GenprompError):
    """An image file cannot be decoded safely (corrupt, empty, too large, unsupported)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnknownLabelError(GenprompError):
    """A label that the project or the localizer does not know."""


class ConfigError(GenprompError):
    """An option or setting with an invalid value."""


class TokenFileError(GenprompError):
    """A learned-embedding file that is not in the textual-inversion format."""


class StoreError(GenprompError):
    """The project store cannot do what was asked (missing project, old schema, busy database)."""


class SchemaOutdatedError(StoreError):
    """The database schema is older than this version of the code."""


class LabelConfigError(GenprompError):
    """A Label Studio label config without a usable RectangleLabels/Image pair."""
