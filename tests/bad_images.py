"""Writers of real problem images for import/annotate tests (each a real file, as users have them)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _array(size: tuple[int, int], seed: int) -> np.ndarray:
    width, height = size
    array = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    array[height // 4: height // 2, width // 4: width // 2] = 255
    return array


def good_image(path: Path, seed: int, size: tuple[int, int] = (96, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_array(size, seed)).save(path)
    return path


def truncated_jpeg(path: Path, seed: int = 101) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(_array((96, 64), seed)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def png_bomb(path: Path, side: int = 100_000) -> Path:
    """A few hundred bytes whose header claims side × side pixels (Pillow refuses it as a bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\x00" * (side + 1) * 2)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def cmyk_jpeg(path: Path, seed: int = 102) -> Path:
    Image.fromarray(_array((96, 64), seed)).convert("CMYK").save(path, format="JPEG")
    return path


def sixteen_bit_png(path: Path, seed: int = 103) -> Path:
    grey = np.random.default_rng(seed).integers(0, 65535, (64, 96), dtype=np.uint16)
    Image.fromarray(grey).save(path)  # mode I;16
    return path


def exif_rotated_jpeg(path: Path, seed: int = 104) -> Path:
    """Stored 96×64 with EXIF orientation 6 (rotate 90° clockwise to view): upright it is 64×96."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_array((96, 64), seed)).save(path, format="JPEG", exif=exif.tobytes())
    return path


def non_utf8_named(folder: Path, seed: int = 105) -> Path:
    """A good JPEG whose file name is not valid UTF-8 (Latin-1 `café` plus a 0xFF byte)."""
    raw = os.fsencode(folder) + b"/caf\xe9\xff.jpg"
    buffer = io.BytesIO()
    Image.fromarray(_array((96, 64), seed)).save(buffer, format="JPEG")
    with open(raw, "wb") as handle:
        handle.write(buffer.getvalue())
    return Path(os.fsdecode(raw))


def problem_folder(root: Path) -> dict[str, Path]:
    """imagefolder layout: cat/ holds 2 good images, 5 hard-but-valid ones and 3 broken ones; zebra/ 1 good."""
    cat = root / "cat"
    cat.mkdir(parents=True, exist_ok=True)
    files = {
        "good_jpg": good_image(cat / "good.jpg", 1),
        "good_png": good_image(cat / "good.png", 2, size=(80, 120)),
        "truncated": truncated_jpeg(cat / "truncated.jpg"),
        "empty": empty_file(cat / "empty.jpg"),
        "bomb": png_bomb(cat / "bomb.png"),
        "cmyk": cmyk_jpeg(cat / "cmyk.jpg"),
        "16bit": sixteen_bit_png(cat / "deep.png"),
        "exif": exif_rotated_jpeg(cat / "rotated.jpg"),
        "non_utf8": non_utf8_named(cat),
        "unknown_label": good_image(root / "zebra" / "z.jpg", 3),
    }
    return files


BROKEN = ("truncated", "empty", "bomb", "unknown_label")
READABLE = ("good_jpg", "good_png", "cmyk", "16bit", "exif", "non_utf8")
