"""Capture keeps softmax(QKᵀ/√d)[:, :, :, token] of the selected cross-attention layers only."""

import torch

from genpromp_annotate.engine.capture import (
    CaptureState,
    ColumnCaptureProcessor,
    capture_columns,
    probe_cross_attention_layers,
    run_unet_capturing,
    select_layers,
)


def _inputs(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, 64, 64, generator=g)
    context = torch.randn(batch, 77, model.unet.config.cross_attention_dim, generator=g)
    return latents, torch.tensor([0, 99][:batch]), context


def test_probe_finds_sd_v1_layout(tiny_model):
    layers = probe_cross_attention_layers(tiny_model.unet)
    sides = [(layer.part, layer.query_side(64)) for layer in layers]
    # 2 per down block at 64/32/16, 1 in the mid block at 8, 3 per up block at 16/32/64
    assert sides == [("down", 64)] * 2 + [("down", 32)] * 2 + [("down", 16)] * 2 + [("mid", 8)] + \
        [("up", 16)] * 3 + [("up", 32)] * 3 + [("up", 64)] * 3
    chosen = [layer.name.removesuffix(".processor") for layer in select_layers(layers, 64, (8, 16))]
    assert chosen == [
        "down_blocks.2.attentions.0.transformer_blocks.0.attn2",
        "down_blocks.2.attentions.1.transformer_blocks.0.attn2",
        "mid_block.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
        "up_blocks.1.attentions.2.transformer_blocks.0.attn2",
    ]


def test_only_selected_layers_get_the_processor_and_originals_come_back(tiny_model):
    unet = tiny_model.unet
    layers = select_layers(probe_cross_attention_layers(unet), 64, (8, 16))
    before = dict(unet.attn_processors)
    with capture_columns(unet, layers, CaptureState()):
        during = unet.attn_processors
        captured = {name for name, proc in during.items() if isinstance(proc, ColumnCaptureProcessor)}
        assert captured == {layer.name for layer in layers}
        assert not any("attn1" in name for name in captured)  # no self-attention
    assert all(unet.attn_processors[name] is proc for name, proc in before.items())


def test_capture_equals_hand_computed_softmax(tiny_model):
    unet = tiny_model.unet
    layers = select_layers(probe_cross_attention_layers(unet), 64, (8, 16))
    name = "mid_block.attentions.0.transformer_blocks.0.attn2"
    module = dict(unet.named_modules())[name]
    seen = {}
    hook = module.register_forward_pre_hook(
        lambda _mod, args, kwargs: seen.update(hidden=args[0] if args else kwargs["hidden_states"],
                                              context=kwargs["encoder_hidden_states"]),
        with_kwargs=True)
    latents, timesteps, context = _inputs(tiny_model)
    positions = torch.tensor([5, 7])
    try:
        with torch.inference_mode():
            columns = run_unet_capturing(unet, latents, timesteps, context, layers, positions, early_exit=False).columns
    finally:
        hook.remove()
    with torch.inference_mode():
        q = module.to_q(seen["hidden"])  # (B, 64, C)
        k = module.to_k(seen["context"])  # (B, 77, C)
        heads = module.heads
        d = q.shape[-1] // heads
        q = q.view(2, -1, heads, d).transpose(1, 2)
        k = k.view(2, -1, heads, d).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)  # (B, H, 64, 77)
    expected = torch.stack([probs[0, :, :, 5], probs[1, :, :, 7]])
    got = columns[f"{name}.processor"]
    assert got.shape == (2, heads, 64) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert set(columns) == {layer.name for layer in layers}


def test_capture_does_not_change_the_unet_output(tiny_model):
    unet = tiny_model.unet
    layers = select_layers(probe_cross_attention_layers(unet), 64, (8, 16))
    latents, timesteps, context = _inputs(tiny_model)
    with torch.inference_mode():
        plain = unet(latents, timesteps, encoder_hidden_states=context).sample
        with capture_columns(unet, layers, CaptureState(token_positions=torch.tensor([5, 5])), early_exit=False):
            captured = unet(latents, timesteps, encoder_hidden_states=context).sample
    # fp32 matmul+softmax vs SDPA: same math, different summation order → float rounding only
    torch.testing.assert_close(captured, plain, rtol=1e-4, atol=1e-5)
