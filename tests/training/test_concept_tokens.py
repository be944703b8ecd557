"""Stage 1: frozen rows bit-identical, per-token gradients, loss goes down, packing = one by one, resume."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.training.concept_tokens import (
    ConceptTrainer,
    ConceptTrainingConfig,
    denoising_loss,
    encode_with_vectors,
    restore_frozen_rows,
    spliced_token_embedding,
)
from genpromp_annotate.training.denoising import prompt_batch

# 64 px keeps the tiny model's steps well under a second on 2 cores; the UNet sees an 8×8 latent.
FAST = ConceptTrainingConfig(resolution=64, batch_size=2, learning_rate=5e-3, max_steps=3, categories_per_step=4)


def test_config_defaults_are_the_papers():
    config = ConceptTrainingConfig()
    assert (config.epochs, config.adam_beta1, config.adam_beta2, config.weight_decay, config.adam_epsilon) == (
        2, 0.9, 0.999, 1e-2, 1e-8)
    assert config.resolution == 512 and config.augment.hue == 0.1 and config.augment.flip_p == 0.5
    # LR 5e-5 scaled by the images behind one token update: batch 4 × accumulation 2 = 8 → 4e-4.
    assert config.replace(grad_accum=2).effective_lr == pytest.approx(5e-5 * 4 * 2)
    assert ConceptTrainingConfig.from_dict(FAST.as_dict()) == FAST
    with pytest.raises(ConfigError, match="batch_size"):
        ConceptTrainingConfig(batch_size=0)


def test_untouched_embedding_rows_are_bit_identical(tiny_model, make_categories):
    table = tiny_model.text_encoder.get_input_embeddings()
    before = table.weight.detach().clone()
    parameters_before = {k: v.clone() for k, v in tiny_model.text_encoder.state_dict().items()}
    results = ConceptTrainer(tiny_model, make_categories(["cat", "dog"], images=2), FAST).run()
    assert tiny_model.text_encoder.get_input_embeddings() is table  # the splice is removed again
    assert torch.equal(table.weight, before)  # every row, bit for bit
    for name, value in tiny_model.text_encoder.state_dict().items():
        assert torch.equal(value, parameters_before[name]), name
    for result in results.values():
        assert result.steps == 3 and result.images_seen == 6
        # the learned vectors did move away from their meta-token initialisation
        meta = before[tiny_model.tokenizer.convert_tokens_to_ids(result.label + "</w>")]
        assert not torch.equal(result.embedding, meta)


def test_reference_whole_matrix_decay_shrinks_rows_and_restoring_fixes_it():
    # The reference loop: AdamW over the whole (V, D) table, gradient on row 1 only, weight decay 1e-2.
    original = torch.randn(6, 4)
    for restore in (False, True):
        table = torch.nn.Parameter(original.clone())
        optimizer = torch.optim.AdamW([table], lr=0.1, weight_decay=1e-2)
        for _ in range(10):
            (table[1] ** 2).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
            if restore:
                restore_frozen_rows(table.data, original, [1])
        untouched = table.detach()[[0, 2, 3, 4, 5]]
        if restore:
            assert torch.equal(untouched, original[[0, 2, 3, 4, 5]])
        else:
            # decoupled decay multiplies each row by (1 − lr·wd) per step: 0.999^10 ≈ 0.990
            assert torch.allclose(untouched, original[[0, 2, 3, 4, 5]] * 0.999**10)


def test_each_token_gets_gradient_only_from_its_own_samples(tiny_model):
    size = tiny_model.text_encoder.get_input_embeddings().num_embeddings
    vectors = torch.randn(2, tiny_model.text_encoder.config.hidden_size, requires_grad=True)
    ids = prompt_batch(tiny_model.tokenizer, [size + 0, size + 1], ["a photo of a {}"] * 2, tiny_model.device)
    with spliced_token_embedding(tiny_model.text_encoder) as splice:
        hidden = encode_with_vectors(tiny_model.text_encoder, splice, ids, vectors)
    hidden[0].sum().backward()  # a loss on sample 0 (token slot 0) only
    assert vectors.grad[0].abs().sum() > 0
    assert torch.equal(vectors.grad[1], torch.zeros_like(vectors.grad[1]))


def test_loss_decreases_on_the_tiny_model(tiny_model, make_categories):
    (category,) = make_categories(["goldfish"], images=3)
    config = dataclasses.replace(FAST, max_steps=8, batch_size=3, learning_rate=2e-3)
    trainer = ConceptTrainer(tiny_model, [category], config)
    start = trainer.initial_vector(category)
    result = trainer.run()[category.token]
    # Same images, same noise and timesteps for both vectors (seeded draws), no augmentation.
    before = denoising_loss(tiny_model, category, start, resolution=64)
    after = denoising_loss(tiny_model, category, result.embedding, resolution=64)
    assert after < before


@pytest.mark.slow
def test_many_categories_per_batch_match_one_by_one(tiny_model, make_categories):
    categories = make_categories(["cat", "dog", "bird"], images=3)
    config = dataclasses.replace(FAST, max_steps=4)
    packed = ConceptTrainer(tiny_model, categories, config).run()
    for category in categories:
        alone = ConceptTrainer(tiny_model, [category], dataclasses.replace(config, categories_per_step=1)).run()
        a, b = packed[category.token], alone[category.token]
        assert a.steps == b.steps == 4
        # Tolerance: the two differ only by batched vs smaller-batch float32 kernels (≈1e-6 relative per
        # op); Adam normalises gradients, so after 4 steps of lr 1e-2 the vectors agree to ~1e-5.
        assert torch.allclose(a.embedding, b.embedding, atol=1e-4, rtol=0)
        assert a.losses == pytest.approx(b.losses, rel=1e-4)
        loss_packed = denoising_loss(tiny_model, category, a.embedding, resolution=64)
        loss_alone = denoising_loss(tiny_model, category, b.embedding, resolution=64)
        assert loss_packed == pytest.approx(loss_alone, rel=1e-4)


def test_grad_accumulation_and_category_rotation(tiny_model, make_categories):
    categories = make_categories(["cat", "dog", "bird"], images=2)
    config = dataclasses.replace(FAST, max_steps=2, grad_accum=2, categories_per_step=2)
    trainer = ConceptTrainer(tiny_model, categories, config)
    reports = []
    while (report := trainer.step()) is not None:
        reports.append(report)
    # Two categories share the first 4 forwards; the third enters when they finish.
    assert [sorted(r.category_losses) for r in reports] == [["cat", "dog"]] * 4 + [["bird"]] * 4
    assert all(r.steps == 2 for r in trainer.finished.values())
    assert [r.label for r in reports[3].finished] == ["cat", "dog"]


def test_state_dict_resume_continues_exactly(tiny_model, make_categories):
    categories = make_categories(["cat", "dog", "bird"], images=2)
    config = dataclasses.replace(FAST, categories_per_step=2, grad_accum=2, max_steps=2)
    uninterrupted = ConceptTrainer(tiny_model, categories, config).run()

    first = ConceptTrainer(tiny_model, categories, config)
    for _ in range(3):  # stop in the middle of an accumulation, with cat and dog active
        first.step()
    state = first.state_dict()
    second = ConceptTrainer(tiny_model, categories, config)
    second.load_state_dict(state)
    resumed = second.run()
    assert sorted(resumed) == sorted(uninterrupted)
    for token, result in uninterrupted.items():
        assert torch.equal(resumed[token].embedding, result.embedding), token


def test_gradient_checkpointing_gives_the_same_tokens(tiny_model_dir, make_categories):
    from genpromp_annotate.engine.loading import load_stable_diffusion

    (category,) = make_categories(["cat"], images=2)
    config = dataclasses.replace(FAST, max_steps=2)
    plain = ConceptTrainer(load_stable_diffusion(tiny_model_dir, "cpu", "float32", training=True), [category], config).run()
    model = load_stable_diffusion(tiny_model_dir, "cpu", "float32", training=True)  # own copy: checkpointing is a UNet flag
    checkpointed = ConceptTrainer(model, [category], dataclasses.replace(config, gradient_checkpointing=True)).run()
    assert model.unet.is_gradient_checkpointing
    # Recomputing activations in the backward pass repeats the same float32 ops: equal up to ~1e-7.
    assert torch.allclose(plain[category.token].embedding, checkpointed[category.token].embedding, atol=1e-6)


def test_low_precision_model_trains_float32_tokens(tiny_model_dir, make_categories):
    # What a GPU run does with bf16 weights (CPU bf16 here): the frozen model computes in bf16, the
    # trainable vectors and AdamW stay float32, and the vocabulary is still untouched.
    from genpromp_annotate.engine.loading import load_stable_diffusion

    model = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="bfloat16", training=True)
    (category,) = make_categories(["cat"], images=2)
    before = model.text_encoder.get_input_embeddings().weight.detach().clone()
    result = ConceptTrainer(model, [category], dataclasses.replace(FAST, max_steps=2)).run()[category.token]
    assert result.embedding.dtype == torch.float32 and torch.isfinite(result.embedding).all()
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert not torch.equal(result.embedding, before[category.meta_token_id].float())
    assert torch.equal(model.text_encoder.get_input_embeddings().weight, before)


def test_stage_one_on_the_native_modules_learns_the_same_tokens(tiny_model, tiny_model_dir, make_categories):
    """The Label Studio backend trains missing tokens on its shared inference model, opened natively."""
    from genpromp_annotate.engine.loading import load_stable_diffusion

    native = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32")
    assert native.runtime == "native" and tiny_model.runtime == "diffusers"
    categories = make_categories(["cat", "dog"], images=2)
    ours, theirs = (ConceptTrainer(model, categories, FAST).run() for model in (native, tiny_model))
    for token, result in ours.items():
        assert (result.embedding - theirs[token].embedding).abs().max().item() <= 1e-5
    with pytest.raises(ConfigError, match="gradient checkpointing needs diffusers' modules.*training=True"):
        ConceptTrainer(native, categories, dataclasses.replace(FAST, gradient_checkpointing=True))
