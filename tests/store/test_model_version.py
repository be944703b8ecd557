"""model_version: a short digest of exactly what produced a box."""

import hashlib
import json
import os
import shutil
from pathlib import Path

from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate.store.model_version import base_model_identity, model_version_for


def test_name_is_gp_and_the_first_12_hex_of_sha256_over_the_four_parts_joined_by_newlines():
    parts = model_version_for("/models/sd15", "abc123", None, "paper|tau0.25")  # not on disk: a hub-style id
    expected = "gp-" + hashlib.sha256(b"hub:/models/sd15\nabc123\nbase\npaper|tau0.25").hexdigest()[:12]
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


def _change_one_weight(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = next((folder / "unet").glob("*.safetensors"))
    tensors = load_file(str(path))
    name = min(tensors)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1.0
    save_file(tensors, str(path))


def test_a_model_is_named_by_its_content_not_its_path(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    key = LocalizeConfig().box_settings_key
    here = model_version_for(str(tiny_model_dir), "none", None, key)
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(tiny_model_dir, moved)
    assert model_version_for(str(moved), "none", None, key).name == here.name  # copied or moved: same boxes
    assert model_version_for(str(moved), "none", None, key).base_model == str(moved)  # shown as given
    _change_one_weight(moved)
    assert model_version_for(str(moved), "none", None, key).name != here.name  # weights replaced in place


def test_file_digests_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    first = base_model_identity(str(weights))
    cache = json.loads((tmp_path / "home" / "cache" / "file-digests.json").read_text())
    assert list(cache.values()) == [hashlib.sha256(b"a" * 1000).hexdigest()]
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(1, 1))  # new mtime: the cached digest is not used
    assert base_model_identity(str(weights)) != first
    assert base_model_identity("runwayml/stable-diffusion-v1-5") == "hub:runwayml/stable-diffusion-v1-5"
