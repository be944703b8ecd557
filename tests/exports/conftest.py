"""A small box table shared by the export tests (the shape `load_boxes(project)` returns)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

NAN = math.nan

# (image_uri, width, height, label, x1, y1, x2, y2, score, model_version)
ROWS = [
    # the golden image: 200×100, one box 20,10→120,60
    ("imgs/a.jpg", 200, 100, "cat", 20.0, 10.0, 120.0, 60.0, 0.9, "v1"),
    # two boxes of two model versions, one with fractional pixels, one covering the whole image
    ("http://example.org/media/b.png", 64, 48, "dog", 0.0, 0.0, 64.0, 48.0, 0.5, "v1"),
    ("http://example.org/media/b.png", 64, 48, "dog", 10.5, 5.25, 30.75, 40.0, 0.3, "v2"),
    # no box yet; its name `a` collides with imgs/a.jpg
    ("/data/local-files/?d=other/a.jpg", 32, 32, "cat", NAN, NAN, NAN, NAN, NAN, None),
]
CATEGORIES = ["cat", "dog", "bird"]  # `bird` has no box but must still be listed


@pytest.fixture()
def box_rows() -> list[tuple]:
    return list(ROWS)


@pytest.fixture()
def categories() -> list[str]:
    return list(CATEGORIES)


@pytest.fixture()
def box_table() -> pd.DataFrame:
    return pd.DataFrame(ROWS, columns=["image_uri", "width", "height", "label", "x1", "y1", "x2", "y2", "score",
                                       "model_version"])
