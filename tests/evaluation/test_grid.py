"""The best/worst PNG grid: layout size, box colours, heat-map blend, unreadable images, empty rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.grid import (
    CAPTION_H,
    HEADER,
    MARGIN,
    PAD,
    GridItem,
    grid_size,
    render_grid,
    tile_origin,
)

TILE = 64
# A 128×64 image in a 64-px tile: x scales by 64/128 = 0.5, y by 64/64 = 1, so edges land on whole pixels.
SIZE = (128, 64)
GT = np.array([[16, 8, 63, 39]])  # inclusive: tile x 8 … (63+1)·0.5−1 = 31, y 8 … 39
PRED = np.array([80, 20, 119, 55])  # tile x 40 … 59, y 20 … 55
BLUE = (40, 40, 200)
INSIDE = (20, 50)  # tile pixel (x, y) on neither box: left of the GT box, below it


def solid_png(path: Path, color: tuple[int, int, int] = BLUE) -> Path:
    Image.new("RGB", SIZE, color).save(path, format="PNG")
    return path


def noisy_jpeg(path: Path) -> Path:
    array = np.random.default_rng(0).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format="JPEG")
    return path


def item(path: Path | None, map_value: float = 0.0, caption: str = "IoU 0.83 · goldfish") -> GridItem:
    return GridItem(image_path=path, map=np.full((16, 32), map_value), gt_boxes=GT, pred_box=PRED,
                    image_size=SIZE, caption=caption)


def tile_pixel(grid: Image.Image, row: int, col: int, x: int, y: int) -> tuple[int, int, int]:
    ox, oy = tile_origin(row, col, TILE)
    return grid.getpixel((ox + x, oy + y))  # type: ignore[return-value]


def render(tmp_path: Path, best, worst, name: str = "grid.png") -> Image.Image:
    path = render_grid(best, worst, tmp_path / name, tile=TILE)
    assert path == tmp_path / name
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.convert("RGB")


def test_layout_size_and_box_colours(tmp_path):
    png, jpeg = solid_png(tmp_path / "a.png"), noisy_jpeg(tmp_path / "b.jpg")
    grid = render(tmp_path, [item(png), item(jpeg)], [item(png)])

    assert grid.size == grid_size(2, 2, TILE)
    assert grid.size == (MARGIN + 2 * (TILE + PAD), HEADER + 2 * (TILE + CAPTION_H + PAD))
    for x, y in [(8, 20), (9, 20), (31, 20), (20, 8), (20, 39)]:  # GT edges, both pixels of the 2-px left edge
        r, g, b = tile_pixel(grid, 0, 0, x, y)
        assert g > 200 and r < 60 and b < 60, (x, y, (r, g, b))
    for x, y in [(40, 30), (59, 30), (50, 20), (50, 55)]:  # predicted-box edges
        r, g, b = tile_pixel(grid, 0, 0, x, y)
        assert r > 200 and g < 60 and b < 60, (x, y, (r, g, b))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_heat_map_blend_golden(tmp_path):
    png = solid_png(tmp_path / "a.png")
    cold = render(tmp_path, [item(png, 0.0)], [], "cold.png")
    hot = render(tmp_path, [item(png, 1.0)], [], "hot.png")
    # JET(0) is RGB (0, 0, 128), JET(1) is (128, 0, 0); 0.55·image + 0.45·heat:
    # cold (0.55·40, 0.55·40, 0.55·200 + 0.45·128) = (22, 22, 167.6); hot (22 + 57.6, 22, 110)
    assert tile_pixel(cold, 0, 0, *INSIDE) == pytest.approx((22, 22, 168), abs=1)
    assert tile_pixel(hot, 0, 0, *INSIDE) == pytest.approx((80, 22, 110), abs=1)
    assert BLUE not in (tile_pixel(cold, 0, 0, *INSIDE), tile_pixel(hot, 0, 0, *INSIDE))


def test_unreadable_or_missing_image_is_a_grey_tile(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    grid = render(tmp_path, [item(bad), item(None)], [item(tmp_path / "missing.png")])
    # grey 128 under a zero map: (0.55·128, 0.55·128, 0.55·128 + 0.45·128) = (70.4, 70.4, 128)
    for row, col in [(0, 0), (0, 1), (1, 0)]:
        assert tile_pixel(grid, row, col, *INSIDE) == pytest.approx((70, 70, 128), abs=1)
        r, g, b = tile_pixel(grid, row, col, 8, 20)  # boxes are still drawn
        assert g > 200 and r < 60 and b < 60


def test_empty_row_is_left_out(tmp_path):
    grid = render(tmp_path, [], [item(None), item(None), item(None)])
    assert grid.size == grid_size(3, 1, TILE)


def test_long_caption_stays_within_its_tile(tmp_path):
    grid = render(tmp_path, [item(None, caption="IoU 0.12 · " + "very long category name " * 20)], [])
    ox, oy = tile_origin(0, 0, TILE)
    gap = grid.crop((ox + TILE, oy + TILE, ox + TILE + PAD, oy + TILE + CAPTION_H))
    assert set(gap.getdata()) == {(255, 255, 255)}
    caption = np.asarray(grid.crop((ox, oy + TILE, ox + TILE, oy + TILE + CAPTION_H)))
    assert (caption < 128).any()  # the cut caption is drawn


def test_two_empty_rows_raise_config_error(tmp_path):
    with pytest.raises(ConfigError, match="empty"):
        render_grid([], [], tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()
