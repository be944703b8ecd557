"""Safe decoding: each bad file gives an ImageError naming it; odd modes decode correctly."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from genpromp_annotate.engine.images import load_image
from genpromp_annotate.errors import ImageError


def _jpeg_bytes(size=(64, 48)):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(_jpeg_bytes()[:300])
    with pytest.raises(ImageError, match="cut.jpg.*(truncated|corrupt)"):
        load_image(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.png: empty file"):
        load_image(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello")
    with pytest.raises(ImageError, match="notes.jpg: not a readable image"):
        load_image(path)


def test_decompression_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (4000, 3000)).save(path)  # 12 M pixels of zeros: a few KB on disk
    with pytest.raises(ImageError, match="bomb.png: refused as a decompression bomb"):
        load_image(path, max_pixels=1_000_000)  # over twice the limit: Pillow refuses at open
    with pytest.raises(ImageError, match="bomb.png.*(decompression bomb|exceeds the limit)"):
        load_image(path, max_pixels=10_000_000)  # between 1× and 2×: refused too, not just warned
    assert load_image(path, max_pixels=12_000_000).size == (4000, 3000)


def test_cmyk_and_16_bit(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(cmyk)  # pure red in CMYK
    image = load_image(cmyk)
    assert image.mode == "RGB" and image.size == (20, 10)
    r, g, b = image.getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60

    deep = tmp_path / "deep.png"
    array = np.full((10, 20), 65535 // 2, dtype=np.uint16)
    Image.fromarray(array).save(deep)
    image = load_image(deep)
    assert image.mode == "RGB" and image.getpixel((0, 0))[0] in (126, 127, 128)  # scaled, not clipped to 255


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.new("RGB", (40, 20), "white").save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_non_utf8_file_name(tmp_path):
    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 byte: surrogate-escaped on a UTF-8 file system
    path = tmp_path / name
    path.write_bytes(_jpeg_bytes())
    assert load_image(path).size == (64, 48)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")
