"""Localizer.set_meta_word: a forced meta word (CUB's `bird`) replaces the method §2 rule for f_d."""

import pytest
import torch

from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.errors import ConfigError


def test_forced_meta_word_gives_the_words_prompt(tiny_model):
    localizer = Localizer(tiny_model)
    label = "001.Black_footed_Albatross"
    before = localizer.prompt_for(label).embedding.clone()  # cached under the rule's meta token
    bird_id = tiny_model.tokenizer("bird", add_special_tokens=False).input_ids[0]
    assert localizer.category(label).meta_token_id != bird_id
    assert localizer.set_meta_word(label, "bird") == bird_id
    assert localizer.category(label).meta_word == "bird"
    forced = localizer.prompt_for(label).embedding
    assert not torch.equal(forced, before)  # the cached prompt was dropped
    torch.testing.assert_close(forced, localizer.prompt_for("bird").embedding, rtol=0, atol=0)


def test_meta_word_must_be_one_token(tiny_model):
    with pytest.raises(ConfigError, match=r"encodes to \d+ tokens, expected exactly 1"):
        Localizer(tiny_model).set_meta_word("cat", "albatrossy bird")


def test_forced_meta_word_changes_the_tokens_digest(tiny_model):
    from genpromp_annotate.engine.localizer import Localizer

    localizer = Localizer(tiny_model)
    localizer.category("Black footed Albatross")
    assert localizer.tokens_digest == "none"
    localizer.set_meta_word("Black footed Albatross", "bird")
    assert localizer.tokens_digest not in ("none", "")
