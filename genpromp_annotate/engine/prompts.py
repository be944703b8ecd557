"""The 7-template ensemble, f_d and f_r, the ω mix, and a per-category embedding cache (method §3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genpromp_annotate.errors import ConfigError

TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "a rendering of a {}",
    "the photo of a {}",
    "a photo of my {}",
    "a photo of the {}",
    "a photo of one {}",
    "a rendition of a {}",
)


def prompt_ids(tokenizer, token_id: int, template: str, max_length: int = 77) -> tuple[list[int], int]:
    """Token ids of `template` with the category token spliced in, and the category token's position.

    Splicing by id (rather than re-tokenizing a word) keeps sub-word meta tokens such as `ch` and added
    concept tokens exactly one token long.
    """
    if template.count("{}") != 1:
        raise ConfigError(f"template {template!r} must hold exactly one '{{}}'")
    prefix, suffix = template.split("{}")
    before = tokenizer(prefix.strip(), add_special_tokens=False).input_ids if prefix.strip() else []
    after = tokenizer(suffix.strip(), add_special_tokens=False).input_ids if suffix.strip() else []
    ids = [tokenizer.bos_token_id, *before, token_id, *after, tokenizer.eos_token_id]
    if len(ids) > max_length:
        raise ConfigError(f"template {template!r} is longer than {max_length} tokens")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return ids + [pad] * (max_length - len(ids)), 1 + len(before)


@torch.inference_mode()
def encode_ensemble(text_encoder, tokenizer, token_id: int, templates: tuple[str, ...] = TEMPLATES) -> tuple[torch.Tensor, int]:
    """Mean over the templates of the text encoder's `last_hidden_state`, token-wise.

    Returns:
        `(77, D)` tensor in the encoder's dtype, and the category token's position (the same in all
        templates; an error otherwise, since token-wise averaging would mix positions).
    """
    rows, positions = zip(*(prompt_ids(tokenizer, token_id, t) for t in templates))
    if len(set(positions)) != 1:
        raise ConfigError(f"templates put the category token at different positions {sorted(set(positions))}")
    device = text_encoder.get_input_embeddings().weight.device
    ids = torch.tensor(rows, dtype=torch.long, device=device)
    hidden = text_encoder(input_ids=ids).last_hidden_state  # (T, 77, D)
    return hidden.mean(dim=0), positions[0]


def mix_embeddings(f_r: torch.Tensor, f_d: torch.Tensor, omega: float) -> torch.Tensor:
    """f_c = ω·f_r + (1−ω)·f_d (computed in fp32, returned in f_d's dtype)."""
    if not 0.0 <= omega <= 1.0:
        raise ConfigError(f"omega must lie in [0, 1], got {omega}")
    return (omega * f_r.float() + (1.0 - omega) * f_d.float()).to(f_d.dtype)


@dataclass
class CategoryPrompt:
    """What the localizer needs for one label: the conditioning and the column to read."""

    label: str
    embedding: torch.Tensor  # (77, D) f_c
    token_position: int
    meta_token_id: int
    concept_token_id: int | None


class PromptCache:
    """Computes f_c once per (label, ω) and keeps it; `invalidate` after tokens change."""

    def __init__(self, text_encoder, tokenizer, templates: tuple[str, ...] = TEMPLATES) -> None:
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.templates = templates
        self._cache: dict[tuple[str, float], CategoryPrompt] = {}
        self.encoder_calls = 0

    def get(self, label: str, meta_token_id: int, concept_token_id: int | None, omega: float) -> CategoryPrompt:
        key = (label, float(omega))
        if key not in self._cache:
            f_d, position = encode_ensemble(self.text_encoder, self.tokenizer, meta_token_id, self.templates)
            self.encoder_calls += 1
            if concept_token_id is None:
                f_c = f_d
            else:
                f_r, concept_position = encode_ensemble(self.text_encoder, self.tokenizer, concept_token_id, self.templates)
                self.encoder_calls += 1
                if concept_position != position:
                    raise ConfigError(f"{label}: concept and meta tokens sit at different positions")
                f_c = mix_embeddings(f_r, f_d, omega)
            self._cache[key] = CategoryPrompt(label, f_c, position, meta_token_id, concept_token_id)
        return self._cache[key]

    def invalidate(self, label: str | None = None) -> None:
        self._cache = {k: v for k, v in self._cache.items() if label is not None and k[0] != label}
