"""The paper presets carry method §4's settings; a preset name that does not exist is a clear error."""

import pytest

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.presets import PRESETS, preset


@pytest.mark.parametrize("name, tau", [("cub-paper", 0.23), ("imagenet-paper", 0.25), ("paper", 0.25)])
def test_paper_presets(name, tau):
    config = preset(name)
    assert config.threshold == tau and config.preset == name
    # f_c = 0.6·f_r + 0.4·f_d; timesteps 0 and 99; the 8×8 and 16×16 maps; 512 px; noise on; posterior sample
    assert (config.omega, config.timesteps, config.resolutions) == (0.6, (0, 99), (8, 16))
    assert (config.image_size, config.add_noise, config.latent, config.multi_box) == (512, True, "sample", False)


def test_presets_differ_only_where_the_paper_does():
    differ = {k for k, v in preset("cub-paper").as_dict().items() if preset("imagenet-paper").as_dict()[k] != v}
    assert differ == {"threshold", "preset"}
    assert set(PRESETS) >= {"paper", "cub-paper", "imagenet-paper"}


def test_unknown_preset_names_the_choices():
    with pytest.raises(ConfigError, match="unknown preset 'cub'.*cub-paper"):
        preset("cub")
