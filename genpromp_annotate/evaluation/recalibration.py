"""Re-calibration as a pure function: maps and human boxes in, the best (ω, τ) out.

The maps are the engine's `(S, S)` maps of the human-annotated images, one list per ω tried; τ is swept
with the engine's own box rule (MaxBoxAcc at IoU 0.5, `best_threshold`). Among equally good pairs the
first ω (the project's current one) and the τ closest to the current one are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.maxboxacc import ThresholdSweep, best_threshold


@dataclass(frozen=True)
class Calibration:
    """The chosen ω and τ, their accuracy (percent), and each ω's sweep, in the order tried."""

    omega: float
    threshold: float
    accuracy: float
    tried: dict[float, ThresholdSweep]


def calibrate(maps_by_omega: Mapping[float, Sequence[np.ndarray]], human_boxes: Sequence[np.ndarray],
              image_sizes: Sequence[tuple[int, int]], current_threshold: float, multi_box: bool = False,
              min_box_area: float = 0.0) -> Calibration:
    """The best (ω, τ) for these human boxes.

    Args:
        maps_by_omega: ω → one `(S, S)` map per image; the first ω wins ties (put the current ω first).
        human_boxes: per image `(K, 4)` boxes in original pixels, x2/y2 one past the last pixel (as stored).
        image_sizes: per image `(width, height)`.
        current_threshold: among tied τ the one closest to this is kept.
    """
    if not maps_by_omega:
        raise ConfigError("calibrate: no ω to try")
    # the evaluation's IoU is inclusive-pixel: the last covered pixel is x2 − 1
    inclusive = [np.asarray(b, dtype=np.float64) - np.array([0, 0, 1, 1]) for b in human_boxes]
    tried = {float(omega): best_threshold(list(maps), inclusive, image_sizes=list(image_sizes), multi_box=multi_box,
                                          min_area_fraction=min_box_area, prefer=current_threshold)
             for omega, maps in maps_by_omega.items()}
    omega = max(tried, key=lambda w: tried[w].accuracy)  # max keeps the first of equal accuracies
    return Calibration(omega, tried[omega].threshold, tried[omega].accuracy, tried)
