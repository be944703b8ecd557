"""MapCache: float16 round trip, shards (resume, superseding, concurrent writers, corrupt shards, SIGKILL),
the old per-image layout, labels, safe ids, wsolevaluation export; the maps version."""

import gc
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import map_cache_writer as writer
import numpy as np
import pytest

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation import map_cache
from genpromp_annotate.evaluation.layouts import EvalRecord
from genpromp_annotate.evaluation.map_cache import MapCache, maps_settings_key, maps_version
from genpromp_annotate.evaluation.map_shards import is_shard_name
from genpromp_annotate.evaluation.maxboxacc import evaluate_map_folder, map_file
from genpromp_annotate.presets import LocalizeConfig

WRITER = Path(__file__).with_name("map_cache_writer.py")


def _map(seed=0, size=64):
    rng = np.random.default_rng(seed)
    array = rng.random((size, size)).astype(np.float32)
    return (array - array.min()) / (array.max() - array.min())


def _f16(array):
    return np.asarray(array).astype(np.float16).astype(np.float32)


def _shards(cache):
    folder = cache.folder / "shards"
    return sorted(p for p in folder.iterdir() if is_shard_name(p.name)) if folder.is_dir() else []


def test_round_trip_is_float16_of_the_map(tmp_path):
    cache = MapCache(tmp_path, "gp-000000000000")
    original = _map()
    cache.save("001.Albatross/a.jpg", original, "001.Albatross", 320, 200)
    assert cache.path_for("001.Albatross/a.jpg") is None and not _shards(cache)  # buffered, not on disk yet
    assert cache.has("001.Albatross/a.jpg", "001.Albatross") and cache.image_ids() == ["001.Albatross/a.jpg"]
    shard = cache.flush()
    assert cache.flush() is None  # nothing left to write
    assert shard is not None and _shards(cache) == [shard] and cache.path_for("001.Albatross/a.jpg") == shard
    assert [p.name for p in shard.parent.iterdir()] == [shard.name]  # no temporary file left behind
    for reader in (cache, MapCache(tmp_path, "gp-000000000000")):
        entry = reader.load("001.Albatross/a.jpg")
        assert entry.map.dtype == np.float32 and entry.map.shape == (64, 64)
        np.testing.assert_array_equal(entry.map, _f16(original))
        # float16 keeps 11 significant bits: error ≤ 2⁻¹² on [0.5, 1], far below the box rule's 1/255 step
        assert np.abs(entry.map - original).max() <= 2**-12
        assert (entry.label, entry.width, entry.height) == ("001.Albatross", 320, 200)
    with np.load(shard) as data:  # a shard is a plain .npz: one float16 member per map
        assert data["map00000"].dtype == np.float16


def test_many_images_span_several_shards(tmp_path):
    cache = MapCache(tmp_path, "v", shard_size=8)
    for i in range(50):
        cache.save(f"d{i % 4}/{i}.png", _map(i, size=16 + i % 3), f"class {i % 5}", 10 + i, 20 + i)
    assert len(_shards(cache)) == 6  # a full buffer is written at once; 2 maps are still buffered
    with cache:
        pass
    assert len(_shards(cache)) == 7
    reopened = MapCache(tmp_path, "v")
    assert reopened.image_ids() == sorted(f"d{i % 4}/{i}.png" for i in range(50))
    for i in range(50):
        entry = reopened.load(f"d{i % 4}/{i}.png")
        np.testing.assert_array_equal(entry.map, _f16(_map(i, size=16 + i % 3)))
        assert (entry.label, entry.width, entry.height) == (f"class {i % 5}", 10 + i, 20 + i)


def test_resume_answers_has_from_the_shard_indexes(tmp_path, monkeypatch):
    with MapCache(tmp_path, "v", shard_size=3) as cache:
        for i in range(7):
            cache.save(f"{i}.png", _map(i, 8), "cat" if i % 2 else "dog", 5, 5)
    monkeypatch.setattr(map_cache.ShardReader, "read", lambda *a: pytest.fail("has() must not read a map"))
    reopened = MapCache(tmp_path, "v")
    assert [reopened.has(f"{i}.png", "cat" if i % 2 else "dog") for i in range(7)] == [True] * 7
    assert not reopened.has("1.png", "dog") and not reopened.has("7.png") and not reopened.has("7.png", "cat")
    assert reopened.has("0.png")


def test_a_later_save_supersedes_an_earlier_one(tmp_path):
    with MapCache(tmp_path, "v") as first:
        first.save("a.png", _map(1), "cat", 1, 1)
        first.save("a.png", _map(2), "cat", 2, 2)  # the same buffer: the last one counts
        first.save("b.png", _map(3), "cat", 3, 3)
    with MapCache(tmp_path, "v") as second:  # another run, a newer shard
        second.save("a.png", _map(4), "dog", 4, 4)
    reopened = MapCache(tmp_path, "v")
    entry = reopened.load("a.png")
    np.testing.assert_array_equal(entry.map, _f16(_map(4)))
    assert (entry.label, entry.width) == ("dog", 4) and not reopened.has("a.png", "cat")
    assert reopened.load("b.png").width == 3 and reopened.image_ids() == ["a.png", "b.png"]
    assert first.load("b.png").width == 3  # the old instance still reads its own shard


def test_two_writers_of_one_version_keep_each_others_shards(tmp_path):
    one, two = MapCache(tmp_path, "v", shard_size=2), MapCache(tmp_path, "v", shard_size=2)
    for i in range(6):  # interleaved, as two processes would
        (one if i % 2 else two).save(f"{i}.png", _map(i, 8), "cat", i, i)
    one.flush()
    two.flush()
    shards = _shards(one)
    assert len(shards) == 4 and len({p.name for p in shards}) == 4
    reopened = MapCache(tmp_path, "v")
    assert reopened.image_ids() == [f"{i}.png" for i in range(6)]
    assert [reopened.load(f"{i}.png").width for i in range(6)] == list(range(6))


def _legacy(folder, image_id, map_, label, size=(7, 9)):
    """A map file as the per-image cache wrote it."""
    path = folder / f"{image_id}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, map=map_.astype(np.float16), label=np.array(label), size=np.array(size))
    return path


def test_the_old_per_image_layout_is_still_read(tmp_path, caplog):
    old = _legacy(tmp_path / "v" / "a", "b.jpg", _map(1), "cat")
    _legacy(tmp_path / "v", "c.jpg", _map(2), "dog")
    (tmp_path / "v" / "bad.png.npz").write_bytes(b"not a zip")
    cache = MapCache(tmp_path, "v")
    assert cache.image_ids() == ["a/b.jpg", "bad.png", "c.jpg"] and cache.path_for("a/b.jpg") == old
    assert cache.has("a/b.jpg", "cat") and not cache.has("a/b.jpg", "dog") and not cache.has("x.jpg")
    entry = cache.load("a/b.jpg")
    np.testing.assert_array_equal(entry.map, _f16(_map(1)))
    assert (entry.label, entry.width, entry.height) == ("cat", 7, 9)
    with caplog.at_level(logging.WARNING, logger="genpromp_annotate"):
        assert not cache.has("bad.png", "cat")
    assert "bad.png.npz: unreadable cached map" in caplog.text
    with pytest.raises(ConfigError, match=r"bad.png.npz: unreadable cached map of image 'bad.png'"):
        cache.load("bad.png")
    with cache:  # a map saved again goes into a shard, which wins; the old file is left as it was
        cache.save("a/b.jpg", _map(3), "dog", 1, 2)
    before = old.read_bytes()
    reopened = MapCache(tmp_path, "v")
    assert reopened.load("a/b.jpg").label == "dog" and reopened.load("c.jpg").label == "dog"
    assert reopened.image_ids() == ["a/b.jpg", "bad.png", "c.jpg"] and old.read_bytes() == before


def test_a_corrupt_shard_is_skipped_with_a_warning(tmp_path, caplog):
    with MapCache(tmp_path, "v", shard_size=2) as cache:
        for i in range(6):
            cache.save(f"{i}.png", _map(i, 8), "cat", i, i)
    first, _, third = _shards(cache)
    third.write_bytes(third.read_bytes()[: third.stat().st_size // 2])  # a truncated shard: 4.png, 5.png
    junk = first.with_name("shard-0000000000000000001-1-000000-abcdef.npz")  # well named, not a zip
    junk.write_bytes(b"junk")
    with caplog.at_level(logging.WARNING, logger="genpromp_annotate"):
        reopened = MapCache(tmp_path, "v")
    assert f"{third}: unreadable map shard" in caplog.text and f"{junk}: unreadable map shard" in caplog.text
    assert "its maps will be recomputed" in caplog.text and sorted(reopened.skipped) == sorted([third, junk])
    assert reopened.image_ids() == ["0.png", "1.png", "2.png", "3.png"]  # the other shards' maps are all there
    assert reopened.load("3.png").width == 3 and not reopened.has("4.png", "cat")
    with pytest.raises(ConfigError, match=r"no cached map for image '4.png'; 2 unreadable shard\(s\) were skipped"):
        reopened.load("4.png")


def test_a_corrupt_map_inside_a_shard_names_the_shard(tmp_path):
    with MapCache(tmp_path, "v") as cache:
        cache.save("a.png", _map(0), "cat", 1, 1)
        cache.save("b.png", _map(1), "cat", 1, 1)
    shard = _shards(cache)[0]
    with zipfile.ZipFile(shard) as archive:
        info = archive.getinfo("map00000.npy")
    data = bytearray(shard.read_bytes())
    name_length = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_length = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    middle = info.header_offset + 30 + name_length + extra_length + info.compress_size // 2
    data[middle : middle + 8] = bytes(255 - b for b in data[middle : middle + 8])  # damage a.png's deflate data
    shard.write_bytes(bytes(data))
    reopened = MapCache(tmp_path, "v")  # the index is intact
    assert reopened.has("a.png", "cat")
    with pytest.raises(ConfigError, match=rf"{shard}: unreadable map map00000.npy of image 'a.png'"):
        reopened.load("a.png")
    np.testing.assert_array_equal(reopened.load("b.png").map, _f16(_map(1)))


def test_pickling_flushes_and_the_copy_reads_the_maps(tmp_path):
    cache = MapCache(tmp_path, "v")
    cache.save("a.png", _map(0), "cat", 3, 4)
    assert cache.load("a.png").width == 3  # flushed, and its shard is kept open for the next read
    cache.save("b.png", _map(1), "dog", 5, 6)
    copy = pickle.loads(pickle.dumps(cache))  # what the spawn-started scoring workers receive
    assert len(_shards(cache)) == 2
    assert copy.load("a.png").width == 3 and copy.load("b.png").label == "dog" and copy.image_ids() == ["a.png", "b.png"]


def test_an_unflushed_cache_warns_when_dropped(tmp_path, caplog):
    cache = MapCache(tmp_path, "v")
    cache.save("a.png", _map(0), "cat", 3, 4)
    with caplog.at_level(logging.WARNING, logger="genpromp_annotate"):
        del cache
        gc.collect()
    assert "1 map(s) were saved but never flushed and are lost" in caplog.text


def _ask_writer(command, stall_at):
    """Run the writer until it stalls in its `stall_at`-th shard write, SIGKILL it; its output lines."""
    process = subprocess.Popen([*command, str(stall_at)], stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, process.kill)  # a writer that never stalls cannot hang the test
    watchdog.start()
    lines = []
    try:
        while (line := process.stdout.readline()) and line.strip() != "stalled":
            lines.append(line.strip())
        lines.append(line.strip())
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        watchdog.cancel()
        process.kill()
        process.stdout.close()
    return lines


def _assert_maps(cache, indices):
    assert cache.image_ids() == sorted(writer.image_id(i) for i in indices) and not cache.skipped
    for i in indices:
        entry = cache.load(writer.image_id(i))
        np.testing.assert_array_equal(entry.map, _f16(writer.expected_map(i)))
        assert (entry.label, entry.width, entry.height) == (writer.label(i), 100 + i, 50 + i)


def test_a_writer_killed_mid_flush_loses_only_its_buffer_and_a_resumed_one_fills_in_the_rest(tmp_path):
    root, version = tmp_path / "maps", "gp-000000000000"
    command = [sys.executable, str(WRITER), str(root), version, "40", "8"]
    assert _ask_writer(command, stall_at=3) == ["flushed 1", "flushed 2", "stalled"]
    files = sorted((root / version / "shards").iterdir())
    temporary = [p for p in files if not is_shard_name(p.name)]
    assert len(files) == 3 and len(temporary) == 1 and temporary[0].name.endswith(".tmp")  # the half-written one
    assert temporary[0].stat().st_size > 0
    _assert_maps(MapCache(root, version), range(16))  # two whole shards; the third's maps were only in memory
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    assert resumed.stdout.split() == ["flushed", "1", "flushed", "2", "flushed", "3", "done", "24"]
    _assert_maps(MapCache(root, version), range(40))


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
        cache.save(image_id, indicator, "cat", 64, 64)  # read back unflushed: load flushes
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
