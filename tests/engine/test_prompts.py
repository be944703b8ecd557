"""Templates, token position, ensemble mean, ω mix, and the per-category cache."""

import pytest
import torch

from genpromp_annotate.engine.prompts import (
    TEMPLATES,
    PromptCache,
    encode_ensemble,
    mix_embeddings,
    prompt_ids,
)
from genpromp_annotate.errors import ConfigError


def test_seven_templates_put_the_token_at_position_5(tiny_model):
    tok = tiny_model.tokenizer
    assert len(TEMPLATES) == 7
    for template in TEMPLATES:
        ids, position = prompt_ids(tok, 40293, template)
        assert len(ids) == 77 and position == 5 and ids[5] == 40293
        # splicing by id gives exactly what the tokenizer gives for the whole sentence, padded with EOS
        expected = tok(template.format("goldfish"), padding="max_length", max_length=77).input_ids
        assert ids == expected


def test_ensemble_is_the_token_wise_mean_of_the_templates(tiny_model):
    f_d, position = encode_ensemble(tiny_model.text_encoder, tiny_model.tokenizer, 40293)
    assert f_d.shape == (77, tiny_model.text_encoder.config.hidden_size) and position == 5
    ids = torch.tensor([prompt_ids(tiny_model.tokenizer, 40293, t)[0] for t in TEMPLATES])
    with torch.no_grad():
        manual = tiny_model.text_encoder(input_ids=ids).last_hidden_state.mean(0)
    torch.testing.assert_close(f_d, manual)


def test_mix():
    f_r, f_d = torch.ones(77, 4), torch.zeros(77, 4)
    assert torch.allclose(mix_embeddings(f_r, f_d, 0.6), torch.full((77, 4), 0.6))
    with pytest.raises(ConfigError):
        mix_embeddings(f_r, f_d, 1.5)


def test_cache_encodes_each_category_once(tiny_model):
    cache = PromptCache(tiny_model.text_encoder, tiny_model.tokenizer)
    first = cache.get("goldfish", 40293, None, 0.6)
    for _ in range(3):
        assert cache.get("goldfish", 40293, None, 0.6) is first
    assert cache.encoder_calls == 1
    cache.get("ray", 3077, None, 0.6)
    assert cache.encoder_calls == 2
    cache.invalidate("goldfish")
    cache.get("goldfish", 40293, None, 0.6)
    assert cache.encoder_calls == 3


def test_template_without_placeholder_is_refused(tiny_model):
    with pytest.raises(ConfigError, match="exactly one"):
        prompt_ids(tiny_model.tokenizer, 1, "a photo")
