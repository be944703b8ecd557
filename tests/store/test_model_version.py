"""model_version: a short digest of exactly what produced a box."""

import hashlib

from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate.store.model_version import model_version_for


def test_name_is_gp_and_the_first_12_hex_of_sha256_over_the_four_parts_joined_by_newlines():
    parts = model_version_for("/models/sd15", "abc123", None, "paper|tau0.25")
    expected = "gp-" + hashlib.sha256(b"/models/sd15\nabc123\nbase\npaper|tau0.25").hexdigest()[:12]
    assert parts.name == expected
    assert parts.unet == "base" and parts.as_dict()["name"] == expected


def test_every_part_changes_the_version():
    key = LocalizeConfig().box_settings_key
    base = model_version_for("/m", "none", None, key).name
    assert model_version_for("/m", "none", None, key).name == base  # deterministic
    variants = [
        model_version_for("/other", "none", None, key),
        model_version_for("/m", "1234abcd", None, key),
        model_version_for("/m", "none", "f00dfeed", key),
        model_version_for("/m", "none", None, LocalizeConfig(threshold=0.23).box_settings_key),
        model_version_for("/m", "none", None, LocalizeConfig(preset="cub-paper").box_settings_key),
    ]
    names = {v.name for v in variants}
    assert len(names) == len(variants) and base not in names
