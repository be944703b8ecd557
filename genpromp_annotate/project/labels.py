"""A project's labels: categories with their meta token (method §2) and concept token name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genpromp_annotate.engine.tokens import concept_token_name, meta_token_for
from genpromp_annotate.errors import UnknownLabelError
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store
from genpromp_annotate.store.models import Category


def add_labels(store: Store, project_name: str, names: Sequence[str], tokenizer: Any) -> list[Category]:
    """Add categories with their meta token (method §2, computed with `tokenizer`) and concept token name."""
    added = []
    with store.write() as session:
        project = q.get_project(session, project_name)
        taken = {c.concept_token for c in q.list_categories(session, project)}
        for name in names:
            name = name.strip()
            if not name:
                raise UnknownLabelError("a label must not be empty")
            meta = meta_token_for(name, tokenizer)
            token = concept_token_name(name)
            suffix = 2
            while token in taken:  # "cat, x" and "cat, y" would both be <cat>
                token = concept_token_name(name).removesuffix(">") + f"-{suffix}>"
                suffix += 1
            taken.add(token)
            added.append(q.add_category(session, project, name, meta.word, token, meta.token_id))
    return added


def load_tokenizer(model_source: str) -> Any:
    """Only the CLIP tokenizer of a model (cheap), for meta tokens at `init` / `labels add`."""
    from pathlib import Path

    from genpromp_annotate.errors import ModelLoadError

    path = Path(model_source).expanduser()
    if path.is_dir() and (path / "tokenizer").is_dir():
        from transformers import CLIPTokenizer

        try:
            return CLIPTokenizer.from_pretrained(str(path / "tokenizer"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path / 'tokenizer'}: cannot load the CLIP tokenizer ({exc})") from exc
    from genpromp_annotate.engine.loading import load_stable_diffusion

    return load_stable_diffusion(model_source, device="cpu").tokenizer
