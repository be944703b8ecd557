"""MapCache: float16 round trip, atomic files, labels, safe ids, wsolevaluation export; the maps version."""

import numpy as np
import pytest

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.layouts import EvalRecord
from genpromp_annotate.evaluation.map_cache import MapCache, maps_settings_key, maps_version
from genpromp_annotate.evaluation.maxboxacc import evaluate_map_folder, map_file
from genpromp_annotate.presets import LocalizeConfig


def _map(seed=0, size=64):
    rng = np.random.default_rng(seed)
    array = rng.random((size, size)).astype(np.float32)
    return (array - array.min()) / (array.max() - array.min())


def test_round_trip_is_float16_of_the_map(tmp_path):
    cache = MapCache(tmp_path, "gp-000000000000")
    original = _map()
    path = cache.save("001.Albatross/a.jpg", original, "001.Albatross", 320, 200)
    assert path == tmp_path / "gp-000000000000" / "001.Albatross" / "a.jpg.npz"  # extension kept, folders kept
    entry = cache.load("001.Albatross/a.jpg")
    assert entry.map.dtype == np.float32 and entry.map.shape == (64, 64)
    np.testing.assert_array_equal(entry.map, original.astype(np.float16).astype(np.float32))
    # float16 keeps 11 significant bits: error ≤ 2⁻¹² on [0.5, 1], far below the box rule's 1/255 step
    assert np.abs(entry.map - original).max() <= 2**-12
    assert (entry.label, entry.width, entry.height) == ("001.Albatross", 320, 200)
    assert [p.name for p in path.parent.iterdir()] == ["a.jpg.npz"]  # no temporary file left behind


def test_has_checks_the_label_and_unreadable_files(tmp_path):
    cache = MapCache(tmp_path, "v")
    cache.save("a.png", _map(), "cat", 10, 10)
    assert cache.has("a.png") and cache.has("a.png", "cat") and not cache.has("a.png", "dog")
    assert not cache.has("b.png")
    cache.path_for("c.png").write_bytes(b"not a zip")
    assert not cache.has("c.png", "cat")
    with pytest.raises(ConfigError, match="c.png.npz: unreadable cached map"):
        cache.load("c.png")
    with pytest.raises(ConfigError, match="no cached map for image 'b.png'"):
        cache.load("b.png")
    assert cache.image_ids() == ["a.png", "c.png"]


@pytest.mark.parametrize("image_id", ["../escape.jpg", "/abs/x.jpg", "a/../../b.jpg", ""])
def test_unsafe_image_ids_are_refused(tmp_path, image_id):
    with pytest.raises(ConfigError, match="relative path without"):
        MapCache(tmp_path, "v").save(image_id, _map(), "cat", 1, 1)


def test_manifest(tmp_path):
    cache = MapCache(tmp_path, "v")
    assert cache.read_manifest() is None
    cache.write_manifest({"model": "m", "config": {"omega": 0.6}})
    assert cache.read_manifest() == {"version": "v", "model": "m", "config": {"omega": 0.6}}


def test_export_is_read_by_the_wsolevaluation_folder_evaluation(tmp_path):
    cache = MapCache(tmp_path / "cache", "v")
    records = []
    for i, image_id in enumerate(["train/a.jpg", "train/b.JPEG"]):
        indicator = np.zeros((64, 64), dtype=np.float32)
        indicator[8:40, 16:48] = 1.0  # [y][x]: x 16…47, y 8…39 of a 64×64 image
        cache.save(image_id, indicator, "cat", 64, 64)
        records.append(EvalRecord(image_id, tmp_path / image_id, 0, None, np.array([[16.0, 8.0, 47.0, 39.0]]),
                                  (64, 64), image_id))
    assert cache.export_wsol([r.image_id for r in records], tmp_path / "wsol") == 2
    saved = np.load(map_file(tmp_path / "wsol", "train/b.JPEG"))
    assert saved.dtype == np.float32 and saved.shape == (64, 64)
    result = evaluate_map_folder(records, tmp_path / "wsol")
    assert result.count == 2 and result.per_delta[50] == 100.0


def test_maps_version_ignores_box_settings_only():
    base = LocalizeConfig()
    version = maps_version("/models/sd", "none", base)
    assert version.startswith("gp-") and len(version) == 15
    assert maps_version("/models/sd", "none", base.replace(threshold=0.5, multi_box=True, preset="x")) == version
    for changed in (base.replace(omega=0.5), base.replace(timesteps=(0,)), base.replace(seed=1),
                    base.replace(latent="mean"), base.replace(add_noise=False)):
        assert maps_version("/models/sd", "none", changed) != version
    assert maps_version("/models/sd", "abc", base) != version
    assert maps_version("/models/sd", "none", base, unet="u1") != version
    assert maps_version("/models/sd", "none", base, meta_words={"*": "bird"}) != version
    assert "meta[*=bird]" in maps_settings_key(base, {"*": "bird"})
