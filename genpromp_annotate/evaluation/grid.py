"""The benchmark report's "best / worst images" grid, written as one PNG.

Each tile is the image resized straight to a `tile`×`tile` square (aspect ratio not kept, as the engine does),
with the localization map blended over it as a JET heat map, the ground-truth boxes in GREEN (0, 255, 0) and
the predicted box in RED (255, 0, 0), 2 px lines, and a one-line caption below. The "best" row comes first,
then "worst", each labelled in the left margin; an empty row is left out.

Layout, in pixels (n_cols = the longer row's length, n_rows = the number of non-empty rows):

    width  = MARGIN + n_cols * (tile + PAD)
    height = HEADER + n_rows * (tile + CAPTION_H + PAD)

and the tile of row r, column c has its top-left corner at `tile_origin(r, c, tile)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from genpromp_annotate.atomic_files import write_atomic
from genpromp_annotate.engine.images import load_image
from genpromp_annotate.errors import ConfigError, GenprompError

MARGIN = 48  # left strip holding the row labels
HEADER = 8  # blank strip above the first row
PAD = 8  # gap after each tile, across and down
CAPTION_H = 16  # caption line under each tile
HEAT_ALPHA = 0.45  # weight of the heat map in the blend
GT_COLOR = (0, 255, 0)
PRED_COLOR = (255, 0, 0)
GREY = (128, 128, 128)  # the tile of an image that is missing or cannot be read
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
LINE_WIDTH = 2


@dataclass(frozen=True)
class GridItem:
    """One image of the grid; boxes are [x1, y1, x2, y2] in original pixels, x2/y2 the last pixel covered."""

    image_path: Path | None  # None or unreadable: a grey tile (the map and boxes are still drawn)
    map: np.ndarray  # (H, W) float in [0, 1] over the whole image, any size
    gt_boxes: np.ndarray  # (K, 4)
    pred_box: np.ndarray  # (4,)
    image_size: tuple[int, int]  # (width, height) of the original image
    caption: str


def grid_size(n_cols: int, n_rows: int, tile: int) -> tuple[int, int]:
    """(width, height) of a grid of `n_rows` rows of at most `n_cols` tiles."""
    return MARGIN + n_cols * (tile + PAD), HEADER + n_rows * (tile + CAPTION_H + PAD)


def tile_origin(row: int, col: int, tile: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of the tile at `row`, `col`."""
    return MARGIN + col * (tile + PAD), HEADER + row * (tile + CAPTION_H + PAD)


def _base_tile(path: Path | None, tile: int) -> np.ndarray:
    """(tile, tile, 3) uint8 RGB: the image resized to the square, or grey when there is none to read."""
    if path is not None:
        try:
            image = load_image(path, name=str(path))
            return np.asarray(image.resize((tile, tile), Image.Resampling.BICUBIC), dtype=np.uint8)
        except GenprompError:
            pass
    return np.full((tile, tile, 3), GREY, dtype=np.uint8)


def _scaled_box(box: np.ndarray, image_size: tuple[int, int], tile: int) -> tuple[float, float, float, float]:
    """An inclusive-pixel box in the original image → the same pixels' outer edges in the tile."""
    sx, sy = tile / image_size[0], tile / image_size[1]
    x1, y1, x2, y2 = (float(v) for v in box)
    # pixel x2 ends at x2 + 1, so the box's right edge in the tile is (x2 + 1)·sx, minus one for the last pixel
    return x1 * sx, y1 * sy, (x2 + 1) * sx - 1, (y2 + 1) * sy - 1


def render_tile(item: GridItem, tile: int) -> Image.Image:
    """The `tile`×`tile` picture of one item: image, heat map, GT boxes (green), predicted box (red)."""
    if item.map.ndim != 2 or min(item.image_size) <= 0:
        raise ConfigError(f"grid item {item.caption!r}: map must be (H, W) and image_size positive, "
                          f"got map shape {item.map.shape} and image_size {item.image_size}")
    base = _base_tile(item.image_path, tile)
    map_01 = np.clip(np.nan_to_num(item.map.astype(np.float32)), 0.0, 1.0)
    map_u8 = (cv2.resize(map_01, (tile, tile), interpolation=cv2.INTER_LINEAR) * 255).round().astype(np.uint8)
    heat = cv2.cvtColor(cv2.applyColorMap(map_u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = cv2.addWeighted(base, 1.0 - HEAT_ALPHA, heat, HEAT_ALPHA, 0.0)
    image = Image.fromarray(blended)
    draw = ImageDraw.Draw(image)
    boxes = [(box, GT_COLOR) for box in np.asarray(item.gt_boxes).reshape(-1, 4)]
    boxes.append((np.asarray(item.pred_box).reshape(4), PRED_COLOR))  # last: on top where the two overlap
    for box, color in boxes:
        x1, y1, x2, y2 = _scaled_box(box, item.image_size, tile)
        if x2 >= x1 and y2 >= y1:
            draw.rectangle((x1, y1, x2, y2), outline=color, width=LINE_WIDTH)
    return image


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
         width: int) -> str:
    """`text` cut to `width` pixels, ending in "…" when it was cut."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_grid(best: Sequence[GridItem], worst: Sequence[GridItem], path: Path, tile: int = 224) -> Path:
    """Write the grid as PNG at `path` atomically; return the path."""
    rows = [(label, items) for label, items in (("best", best), ("worst", worst)) if items]
    if not rows:
        raise ConfigError("the best/worst grid needs at least one image, got two empty rows")
    if tile < 16:
        raise ConfigError(f"grid tile size must be at least 16 px, got {tile}")
    canvas = Image.new("RGB", grid_size(max(len(items) for _, items in rows), len(rows), tile), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, (label, items) in enumerate(rows):
        _, y = tile_origin(r, 0, tile)
        draw.text((4, y + tile // 2 - 6), _fit(draw, label, font, MARGIN - 8), fill=TEXT_COLOR, font=font)
        for c, item in enumerate(items):
            x, y = tile_origin(r, c, tile)
            canvas.paste(render_tile(item, tile), (x, y))
            draw.text((x, y + tile + 2), _fit(draw, item.caption, font, tile), fill=TEXT_COLOR, font=font)
    return write_atomic(path, lambda file: canvas.save(file, format="PNG"))
