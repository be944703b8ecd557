"""Steps 6–7 on synthetic attention columns."""

import torch

from genpromp_annotate.engine.capture import AttentionLayer
from genpromp_annotate.engine.maps import (
    combine_groups,
    group_maps,
    maps_from_columns,
    upsample_and_normalise,
)


def test_timesteps_then_layers_and_heads_are_averaged():
    # one 2×2 layer, T=2 timesteps, B=1 image, H=2 heads; rows are [t][h] → 4 values (y-major)
    layer = AttentionLayer("mid.processor", "mid", 2 / 64, 0)
    column = torch.tensor([[[1.0, 2, 3, 4], [3, 2, 1, 0]],   # t = 0: head 0, head 1
                           [[1.0, 1, 1, 1], [3, 3, 3, 7]]])  # t = 1
    groups = group_maps({"mid.processor": column}, [layer], n_timesteps=2, latent_side=64)
    # mean over t and h: ((1+3+1+3)/4, (2+2+1+3)/4, (3+1+1+3)/4, (4+0+1+7)/4) = (2, 2, 2, 3)
    assert torch.equal(groups[("mid", 2)], torch.tensor([[[2.0, 2.0], [2.0, 3.0]]]))


def test_groups_weigh_equally_whatever_their_layer_count():
    # an 'up' group of 3 layers and a 'down' group of 1 layer, constant maps 1 and 3 → mean 2, /max → 1
    layers = [AttentionLayer(f"u{i}", "up", 16 / 64, i) for i in range(3)] + [AttentionLayer("d", "down", 16 / 64, 9)]
    columns = {f"u{i}": torch.ones(1, 1, 256) for i in range(3)} | {"d": torch.full((1, 1, 256), 3.0)}
    groups = group_maps(columns, layers, 1, 64)
    combined = combine_groups(groups, 64)
    assert combined.shape == (1, 64, 64)
    torch.testing.assert_close(combined, torch.ones(1, 64, 64))


def test_final_map_is_min_max_normalised_and_peaks_where_attention_does():
    layer = AttentionLayer("m", "mid", 8 / 64, 0)
    column = torch.zeros(1, 1, 64)
    column[0, 0, 2 * 8 + 6] = 1.0  # y = 2, x = 6 on the 8×8 grid
    maps = maps_from_columns({"m": column}, [layer], 1, 64, out_size=512)
    assert maps.shape == (1, 512, 512)
    assert float(maps.min()) == 0.0 and float(maps.max()) == 1.0
    y, x = divmod(int(maps[0].argmax()), 512)
    # cell (6, 2) of 8×8 covers x 384..447, y 128..191 of the 512 frame
    assert 384 <= x < 448 and 128 <= y < 192


def test_upsample_constant_map_does_not_divide_by_zero():
    out = upsample_and_normalise(torch.ones(1, 64, 64), 512)
    assert torch.isfinite(out).all()
