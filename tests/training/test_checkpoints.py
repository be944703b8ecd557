"""Atomic checkpoints and the learned_embeds.safetensors export that diffusers loads."""

from __future__ import annotations

import pytest
import torch

from genpromp_annotate.atomic_files import write_atomic
from genpromp_annotate.errors import ConfigError, TokenFileError
from genpromp_annotate.training.checkpoints import (
    export_learned_embeds,
    load_checkpoint,
    read_learned_embeds,
    save_checkpoint,
)


def test_save_and_load_round_trip(tmp_path):
    state = {"active": [{"vector": torch.arange(4.0)}], "global_step": 7}
    path = save_checkpoint(tmp_path / "run" / "checkpoint.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["global_step"] == 7 and torch.equal(loaded["active"][0]["vector"], torch.arange(4.0))
    assert load_checkpoint(tmp_path / "nothing.pt") is None
    with pytest.raises(ConfigError, match="unet-finetune"):
        load_checkpoint(path, kind="unet-finetune")


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", {"global_step": 1})

    def crash(file):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, crash)
    assert load_checkpoint(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_corrupt_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="checkpoint.pt"):
        load_checkpoint(path)


def test_export_is_loaded_by_diffusers_load_textual_inversion(tiny_model_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_model_dir), safety_checker=None,
                                                   requires_safety_checker=False)
    width = pipe.text_encoder.config.hidden_size
    vectors = {"<cat>": torch.randn(width), "<hot-dog>": torch.randn(width)}
    paths = export_learned_embeds(tmp_path / "tokens", vectors)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "tokens/cat/learned_embeds.safetensors", "tokens/hot-dog/learned_embeds.safetensors"]
    assert read_learned_embeds(paths[1]).keys() == {"<hot-dog>"}  # our reader takes the same files
    vocabulary = len(pipe.tokenizer)
    pipe.load_textual_inversion([str(p) for p in paths])
    assert len(pipe.tokenizer) == vocabulary + 2
    table = pipe.text_encoder.get_input_embeddings().weight
    for token, vector in vectors.items():
        token_id = pipe.tokenizer.convert_tokens_to_ids(token)
        assert torch.equal(table[token_id].detach(), vector)
    ids = pipe.tokenizer("a photo of a <hot-dog>").input_ids
    assert pipe.tokenizer.convert_tokens_to_ids("<hot-dog>") in ids


def test_export_refuses_what_diffusers_cannot_read(tmp_path):
    with pytest.raises(TokenFileError):
        export_learned_embeds(tmp_path / "learned_embeds.safetensors", {})
    with pytest.raises(TokenFileError, match="one token per file"):
        export_learned_embeds(tmp_path / "learned_embeds.safetensors", {"<a>": torch.zeros(4), "<b>": torch.zeros(4)})
    (single,) = export_learned_embeds(tmp_path / "learned_embeds.safetensors", {"<a>": torch.ones(4)})
    assert torch.equal(read_learned_embeds(single)["<a>"], torch.ones(4))
