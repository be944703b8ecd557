"""The meta-token rule (method §2) on the 1000 ImageNet class strings, concept tokens, token files."""

from collections import Counter
from pathlib import Path

import pytest
import torch

from genpromp_annotate.engine.tiny_model import load_clip_tokenizer
from genpromp_annotate.engine.tokens import (
    add_concept_tokens,
    concept_token_name,
    meta_token_for,
    read_learned_embeds,
    synonym_last_words,
    write_learned_embeds,
)
from genpromp_annotate.errors import TokenFileError

IMAGENET = Path(__file__).parents[1] / "data" / "imagenet_synset_mapping.txt"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_clip_tokenizer(tiny_model_dir / "tokenizer")


@pytest.fixture(scope="module")
def imagenet_meta(tokenizer):
    names = [line.split(" ", 1)[1] for line in IMAGENET.read_text().splitlines()]
    return names, [meta_token_for(name, tokenizer) for name in names]


def test_clip_tokenizer_matches_vit_l14_ids(tokenizer):
    # CLIP ViT-L/14: BOS 49406, "a" 320, "photo" 1125, "of" 539, "a" 320, "goldfish" 40293, EOS 49407
    assert tokenizer("a photo of a goldfish").input_ids == [49406, 320, 1125, 539, 320, 40293, 49407]
    assert len(tokenizer) == 49408


@pytest.mark.parametrize(
    "category, word, whole",
    [
        ("tench, Tinca tinca", "ch", False),  # no synonym is one token → last BPE piece of "tench"
        ("goldfish, Carassius auratus", "goldfish", True),
        ("electric ray, crampfish, numbfish, torpedo", "ray", True),
        ("brambling, Fringilla montifringilla", "bling", False),
        ("goldfinch, Carduelis carduelis", "finch", False),
        ("bird", "bird", True),  # CUB uses one word for all 200 classes
    ],
)
def test_paper_examples(tokenizer, category, word, whole):
    meta = meta_token_for(category, tokenizer)
    assert (meta.word, meta.whole_word) == (word, whole)
    assert tokenizer.convert_ids_to_tokens(meta.token_id).removesuffix("</w>") == word


def test_imagenet_counts(imagenet_meta):
    _, metas = imagenet_meta
    assert len(metas) == 1000
    assert sum(m.whole_word for m in metas) == 764
    assert sum(not m.whole_word for m in metas) == 236
    assert len({m.token_id for m in metas}) == 727
    assert Counter(m.word for m in metas)["terrier"] == 21


def test_synonym_last_words():
    assert synonym_last_words("great white shark, white shark,  man-eater") == ["shark", "shark", "man-eater"]


def test_concept_tokens_added_to_tokenizer_and_encoder(tiny_model_dir):
    from transformers import CLIPTextModel

    tokenizer = load_clip_tokenizer(tiny_model_dir / "tokenizer")
    encoder = CLIPTextModel.from_pretrained(tiny_model_dir / "text_encoder")
    before = encoder.get_input_embeddings().weight.detach().clone()
    vector = torch.arange(before.shape[1], dtype=torch.float32)
    ids = add_concept_tokens(tokenizer, encoder, {concept_token_name("Goldfish, Carassius"): vector})
    assert ids == {"<goldfish>": 49408}
    assert tokenizer("a <goldfish>", add_special_tokens=False).input_ids == [320, 49408]
    after = encoder.get_input_embeddings().weight
    assert torch.equal(after[49408], vector)
    assert torch.equal(after[:49408], before)  # existing rows untouched


def test_learned_embeds_round_trip_and_errors(tmp_path):
    vector = torch.randn(32)
    path = write_learned_embeds(tmp_path / "learned_embeds.safetensors", {"<cat>": vector})
    loaded = read_learned_embeds(path)
    assert list(loaded) == ["<cat>"] and torch.equal(loaded["<cat>"], vector)
    torch.save({"<two>": torch.randn(2, 32)}, tmp_path / "multi.bin")
    with pytest.raises(TokenFileError, match="2 vectors"):
        read_learned_embeds(tmp_path / "multi.bin")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(TokenFileError, match="junk.safetensors"):
        read_learned_embeds(tmp_path / "junk.safetensors")
