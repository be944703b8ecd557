"""Decode one image safely: EXIF orientation applied, any mode to 8-bit RGB, bombs refused."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from genpromp_annotate.errors import ImageError

# Pillow's own default guard (about 89 M pixels); GENPROMP_MAX_IMAGE_PIXELS raises or lowers it.
DEFAULT_MAX_PIXELS = int(os.environ.get("GENPROMP_MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS or 89_478_485))


def _to_rgb8(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; 16-bit and float images are scaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        if image.mode == "I" and array.max() <= 255:
            top = 255.0
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGB", image.size, (255, 255, 255))
        rgba = image.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def load_image(source: str | os.PathLike[str] | BinaryIO, max_pixels: int | None = None,
               name: str | None = None) -> Image.Image:
    """Open an image file as upright 8-bit RGB, or raise ImageError naming the file and the reason.

    Args:
        source: a path or a binary file object.
        max_pixels: refuse images with more pixels (decompression bombs); default Pillow's limit.
        name: how to name the file in errors (defaults to the path).
    """
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<stream>"))
    limit = max_pixels or DEFAULT_MAX_PIXELS
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(label, "no such file")
        if path.stat().st_size == 0:
            raise ImageError(label, "empty file (0 bytes)")
    previous_limit = Image.MAX_IMAGE_PIXELS
    previous_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        Image.MAX_IMAGE_PIXELS = limit
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                width, height = image.size
                if width * height > limit:
                    raise ImageError(label, f"{width}x{height} = {width * height} pixels exceeds the limit of {limit}")
                image.load()
                upright = ImageOps.exif_transpose(image) or image
                return _to_rgb8(upright)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(label, f"refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(label, "not a readable image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(label, f"corrupt or truncated image ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
        ImageFile.LOAD_TRUNCATED_IMAGES = previous_truncated
