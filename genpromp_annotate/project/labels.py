"""A project's labels: categories with their meta token (method §2) and concept token name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genpromp_annotate.engine.tokens import MetaToken, concept_token_name, meta_token_for
from genpromp_annotate.errors import ConfigError, UnknownLabelError
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store
from genpromp_annotate.store.models import Category


def add_labels(store: Store, project_name: str, names: Sequence[str], tokenizer: Any,
               meta_word: str | None = None) -> list[Category]:
    """Add categories with their meta token and concept token name.

    The meta token is found by the method §2 rule with `tokenizer`, or is `meta_word` for every label
    (one vocabulary token, e.g. `bird` for CUB's species, as the paper does).
    """
    forced = None
    if meta_word is not None:
        ids = tokenizer(meta_word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ConfigError(f"--meta-word {meta_word!r} encodes to {len(ids)} tokens; choose one word of the "
                              "model's vocabulary")
        forced = MetaToken(word=meta_word, token_id=int(ids[0]), whole_word=True)
    added = []
    with store.write() as session:
        project = q.get_project(session, project_name)
        taken = {c.concept_token for c in q.list_categories(session, project)}
        for name in names:
            name = name.strip()
            if not name:
                raise UnknownLabelError("a label must not be empty")
            meta = forced or meta_token_for(name, tokenizer)
            token = concept_token_name(name)
            suffix = 2
            while token in taken:  # "cat, x" and "cat, y" would both be <cat>
                token = concept_token_name(name).removesuffix(">") + f"-{suffix}>"
                suffix += 1
            taken.add(token)
            added.append(q.add_category(session, project, name, meta.word, token, meta.token_id,
                                        meta_forced=forced is not None))
    return added


def load_tokenizer(model_source: str) -> Any:
    """Only the CLIP tokenizer of a model (cheap), for meta tokens at `init` / `labels add`."""
    from pathlib import Path

    from genpromp_annotate.engine.loading import choose_runtime, load_stable_diffusion
    from genpromp_annotate.errors import ModelLoadError

    path = Path(model_source).expanduser()
    if path.is_dir() and (path / "tokenizer").is_dir() and choose_runtime() != "diffusers":
        from genpromp_annotate.engine.native.clip import ClipTokenizer
        from genpromp_annotate.engine.native.errors import UnsupportedCheckpoint

        try:
            return ClipTokenizer.from_folder(path / "tokenizer")  # ModelLoadError naming the file if unreadable
        except UnsupportedCheckpoint:
            pass  # transformers' tokenizer below reads what the native one does not
    if path.is_dir() and (path / "tokenizer").is_dir():
        from transformers import CLIPTokenizer

        try:
            return CLIPTokenizer.from_pretrained(str(path / "tokenizer"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path / 'tokenizer'}: cannot load the CLIP tokenizer ({exc})") from exc
    return load_stable_diffusion(model_source, device="cpu").tokenizer
