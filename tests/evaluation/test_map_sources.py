"""Map readers (a folder of `.npy` maps, the map cache), the engine frame, and learned-token matching."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from genpromp_annotate.engine.tokens import write_learned_embeds
from genpromp_annotate.errors import ConfigError, GenprompError, TokenFileError
from genpromp_annotate.evaluation.layouts import EvalRecord
from genpromp_annotate.evaluation.map_cache import MapCache
from genpromp_annotate.evaluation.map_sources import (
    CachedMaps,
    FolderMaps,
    MapReadError,
    match_tokens,
    read_token_files,
    to_frame,
    tokens_digest,
)
from genpromp_annotate.training.checkpoints import export_learned_embeds


def record(image_id, path=None, size=(320, 200)):
    return EvalRecord(image_id, path, 0, None, np.array([[0.0, 0.0, 9.0, 9.0]]), size, image_id)


def test_to_frame_resizes_and_min_max_normalises():
    # 4×4, right half 1 → 8×8 bilinear (half-pixel centres): dst x 3 samples src x 1.25 → 0.25, x 4 → 0.75
    half = np.zeros((4, 4))
    half[:, 2:] = 1.0
    frame = to_frame(half, 8)
    assert frame.dtype == np.float32 and frame.shape == (8, 8)
    np.testing.assert_allclose(frame[0], [0, 0, 0, 0.25, 0.75, 1, 1, 1])
    # no resize at the frame size; min 1, max 4 → (v − 1)/3
    np.testing.assert_allclose(to_frame(np.array([[1.0, 2.0], [3.0, 4.0]]), 2), [[0, 1 / 3], [2 / 3, 1]])
    assert not to_frame(np.full((5, 7), 0.3), 8).any()  # constant → zeros
    # NaN → 0 before min-max: [[0, 2], [4, 0]] / 4
    np.testing.assert_allclose(to_frame(np.array([[np.nan, 2.0], [4.0, 0.0]]), 2), [[0, 0.5], [1, 0]])


def test_folder_maps_keep_the_extension_and_subfolders(tmp_path):
    (tmp_path / "maps" / "a").mkdir(parents=True)
    maps = FolderMaps(tmp_path / "maps", size=16)
    raw = np.arange(6, dtype=np.float64).reshape(1, 2, 3)  # (1, H, W) is squeezed to (2, 3)
    np.save(tmp_path / "maps" / "a" / "b.jpg.npy", raw)
    assert maps.path_for(record("a/b.jpg")) == tmp_path / "maps" / "a" / "b.jpg.npy"
    loaded = maps.load(record("a/b.jpg"))
    assert loaded.raw.dtype == np.float32 and loaded.raw.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert loaded.frame.shape == (16, 16) and (loaded.frame.min(), loaded.frame.max()) == (0.0, 1.0)
    assert (loaded.width, loaded.height) == (320, 200)  # the record's size


def test_folder_maps_read_the_size_from_the_image_file(tmp_path, make_image):
    image = make_image("a/b.jpg", size=(96, 64), folder=tmp_path / "images")
    (tmp_path / "maps" / "a").mkdir(parents=True)
    np.save(tmp_path / "maps" / "a" / "b.jpg.npy", np.ones((7, 9), dtype=np.float32))
    loaded = FolderMaps(tmp_path / "maps").load(record("a/b.jpg", image, size=None))
    assert (loaded.width, loaded.height) == (96, 64) and not loaded.frame.any()  # constant map → zeros


def test_folder_maps_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        FolderMaps(tmp_path / "none")
    maps = FolderMaps(tmp_path)
    assert issubclass(MapReadError, GenprompError)
    with pytest.raises(MapReadError, match=r"missing.png.npy: no map for image 'missing.png'"):
        maps.load(record("missing.png"))
    np.save(tmp_path / "cube.png.npy", np.zeros((2, 4, 4)))
    with pytest.raises(MapReadError, match=r"cube.png.npy: expected a 2-D \(H, W\) map, got shape \(2, 4, 4\)"):
        maps.load(record("cube.png"))
    (tmp_path / "junk.png.npy").write_bytes(b"not a numpy file")
    with pytest.raises(MapReadError, match=r"junk.png.npy: unreadable map"):
        maps.load(record("junk.png"))
    np.save(tmp_path / "objects.png.npy", np.array([{"a": 1}], dtype=object))  # needs pickle: refused
    with pytest.raises(MapReadError, match=r"objects.png.npy: unreadable map"):
        maps.load(record("objects.png"))


def test_folder_maps_non_numeric_map_is_a_map_read_error(tmp_path):
    np.save(tmp_path / "text.png.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(MapReadError, match=r"text.png.npy"):
        FolderMaps(tmp_path).load(record("text.png"))


def test_cached_maps_check_the_label(tmp_path):
    cache = MapCache(tmp_path, "gp-000000000000")
    cache.save("a/b.jpg", np.linspace(0, 1, 64).reshape(8, 8), "cat", 320, 200)
    loaded = CachedMaps(cache).load(record("a/b.jpg"), label="cat")
    assert loaded.raw is loaded.frame and loaded.frame.shape == (8, 8)  # stored in the engine frame already
    assert (loaded.width, loaded.height) == (320, 200)
    with pytest.raises(ConfigError, match=r"shards/shard-.*\.npz \(map of 'a/b.jpg'\): cached for label 'cat', the "
                                          "dataset says 'dog'"):
        CachedMaps(cache).load(record("a/b.jpg"), label="dog")


def test_fill_cache_keeps_the_maps_made_before_ctrl_c(tmp_path, make_image):
    """Ctrl-C in the third batch: the four maps of the first two are in a shard, though the shard was not full."""
    from genpromp_annotate.evaluation.map_sources import MapProducer
    from genpromp_annotate.presets import LocalizeConfig

    class Interrupted:  # stands in for the Localizer
        calls = 0

        def compute_maps(self, images, labels):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return torch.full((len(images), 8, 8), 0.5)

    todo = [(record(f"{i}.png", make_image(f"{i}.png", size=(30, 20), folder=tmp_path / "images"), size=None), "cat")
            for i in range(8)]
    producer = MapProducer("no-model", LocalizeConfig())
    producer._localizer = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        producer.fill_cache(MapCache(tmp_path / "maps", producer.version, shard_size=100), todo, batch_size=2)
    reopened = MapCache(tmp_path / "maps", producer.version)
    assert reopened.image_ids() == ["0.png", "1.png", "2.png", "3.png"]
    assert (reopened.load("3.png").width, reopened.load("3.png").height) == (30, 20)


def test_match_tokens_by_class_name():
    v = {name: torch.full((4,), float(i)) for i, name in enumerate(["<goldfish>", "<Great-White-Shark>", "tench"])}
    labels = ["goldfish, Carassius auratus", "great white shark", "Tench", "stingray"]
    matched = match_tokens(v, labels)
    # <goldfish> is concept_token_name of the first label (name before the comma); case and <…> do not matter
    assert {label: t.token for label, t in matched.items()} == {
        "goldfish, Carassius auratus": "<goldfish>", "great white shark": "<Great-White-Shark>", "Tench": "tench"}
    assert matched["Tench"].vector is v["tench"]  # stingray has no token


def test_tokens_digest():
    assert tokens_digest({}) == "none"
    vector = torch.tensor([1.0, 2.0, 3.0])
    tokens = match_tokens({"<cat>": vector}, ["cat"])
    # as Localizer.tokens_digest: sha256 of the sorted (label, sha256(float32 bytes)[:12]) pairs
    item = hashlib.sha256(np.array([1, 2, 3], dtype=np.float32).tobytes()).hexdigest()[:12]
    assert tokens["cat"].digest == item
    assert tokens_digest(tokens) == hashlib.sha256(repr([("cat", item)]).encode()).hexdigest()[:12]
    assert tokens_digest(match_tokens({"<cat>": vector + 1e-3}, ["cat"])) != tokens_digest(tokens)


def test_read_token_files(tmp_path):
    goldfish, tench = torch.randn(8, generator=torch.Generator().manual_seed(0)), torch.ones(8)
    write_learned_embeds(tmp_path / "tokens" / "goldfish.safetensors", {"<goldfish>": goldfish})
    write_learned_embeds(tmp_path / "tokens" / "sub" / "tench.safetensors", {"<tench>": tench})
    tokens = read_token_files(tmp_path / "tokens")  # the folder, searched recursively
    assert sorted(tokens) == ["<goldfish>", "<tench>"]
    assert torch.equal(tokens["<goldfish>"], goldfish) and torch.equal(tokens["<tench>"], tench)
    assert list(read_token_files(tmp_path / "tokens" / "goldfish.safetensors")) == ["<goldfish>"]  # one file
    write_learned_embeds(tmp_path / "tokens" / "more.safetensors", {"<goldfish>": tench})
    with pytest.raises(TokenFileError, match=r"more.safetensors: token '<goldfish>' is also in another file"):
        read_token_files(tmp_path / "tokens")
    # the exporter's layout: <folder>/<token slug>/learned_embeds.safetensors, one token per file
    export_learned_embeds(tmp_path / "exported", {"<goldfish>": goldfish, "<tench>": tench})
    assert sorted(read_token_files(tmp_path / "exported")) == ["<goldfish>", "<tench>"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenFileError, match="no learned-token file"):
        read_token_files(tmp_path / "empty")


@pytest.mark.slow  # the tiny model on 5 images, twice
@pytest.mark.parametrize("loaders", [1, 3])
def test_fill_cache_prefetches_batches_and_lists_unreadable_images(tiny_model_dir, tmp_path, loaders):
    """Batches of 2 with a broken file in the middle: every readable image is cached under its label, in
    order, with the same maps whatever the number of loader threads; the broken one is listed."""
    from PIL import Image

    from genpromp_annotate.evaluation.map_sources import MapProducer
    from genpromp_annotate.presets import LocalizeConfig

    todo = []
    for i in range(5):
        path = tmp_path / "images" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        if i == 2:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(path)
        todo.append((EvalRecord(f"{i}.png", path, i % 2, None, np.zeros((1, 4)), None, f"{i}.png"),
                     ["cat", "dog"][i % 2]))
    producer = MapProducer(str(tiny_model_dir), LocalizeConfig(image_size=256, latent="mean"), device="cpu",
                           dtype="float32")
    cache = MapCache(tmp_path / f"maps-{loaders}", producer.version)
    done: list[int] = []
    failed = producer.fill_cache(cache, todo, batch_size=2, progress=done.append, loaders=loaders)
    assert done == [2, 2, 1] and [image_id for image_id, _ in failed] == ["2.png"] and "2.png" in failed[0][1]
    assert cache.image_ids() == ["0.png", "1.png", "3.png", "4.png"]
    assert [cache.load(f"{i}.png").label for i in (0, 1, 3, 4)] == ["cat", "dog", "dog", "cat"]
    assert (cache.load("1.png").width, cache.load("1.png").height) == (60, 40)
    reference = producer.localizer(["cat", "dog"]).compute_maps([Image.open(todo[3][0].path).convert("RGB")], ["dog"])
    assert np.allclose(cache.load("3.png").map, reference[0].numpy(), atol=1e-3)  # float16 storage
