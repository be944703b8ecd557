"""model_version: a short, readable name for exactly what produced a box.

`gp-<digest12>` where the digest covers the base model id, the digest of the concept-token embeddings
in use (Localizer.tokens_digest), the UNet finetune digest (or "base") and the settings that change
boxes (LocalizeConfig.box_settings_key: preset, ω, timesteps, resolutions, τ, ...). Change any of
them and the version changes, so `annotate` and the Label Studio backend redo the boxes.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

VERSION_PREFIX = "gp-"


@dataclass(frozen=True)
class ModelVersionParts:
    """The inputs of a model version; `name` is derived from them."""

    base_model: str  # the project's base model id (folder, file or hub id)
    tokens_digest: str  # Localizer.tokens_digest ("none" when no concept token is learned)
    unet: str  # weights digest of the selected finetuned UNet, or "base"
    settings_key: str  # LocalizeConfig.box_settings_key

    @property
    def name(self) -> str:
        payload = f"{self.base_model}\n{self.tokens_digest}\n{self.unet}\n{self.settings_key}"
        return VERSION_PREFIX + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, **asdict(self)}


def model_version_for(base_model: str, tokens_digest: str, unet: str | None, settings_key: str) -> ModelVersionParts:
    """The model version of a base model + token set + UNet (None = the base model's) + box settings.

    Example: `model_version_for("/models/sd15", "none", None, config.box_settings_key).name` →
    `"gp-…"` (12 hex digits).
    """
    return ModelVersionParts(base_model=str(base_model), tokens_digest=tokens_digest or "none",
                             unet=unet or "base", settings_key=settings_key)
