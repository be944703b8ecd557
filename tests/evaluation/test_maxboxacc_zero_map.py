"""Golden test: MaxBoxAcc / MaxBoxAccV2 on maps that end up all-zero, against wsolevaluation's rules.

wsolevaluation (Choe et al., CVPR 2020) turns a CAM into boxes in two steps: its inference code resizes the
CAM to 224 (bicubic, in float64: the CAM comes out of `t2n` as float64) and normalises it, returning an
all-zero map when the map has ANY NaN or when min == max; its BoxEvaluator then quantises `uint8(map·255)`,
keeps pixels strictly above `int(τ·max)` and boxes the contours. An all-zero map keeps no pixel at any τ, and
"no contour" is the box [0, 0, 0, 0], which the inclusive (+1) IoU reads as the 1×1 pixel at the origin: it
matches a GT box that resizes to [0, 0, 0, 0] (IoU 1) and nothing else.

`Reference` below re-states those rules, one small function each, independently of our evaluator, and the
test asserts `MaxBoxAccEvaluator` gives the same per-δ numbers, v1 and V2.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccEvaluator


class Reference:
    """wsolevaluation's rules, written out plainly for the test."""

    @staticmethod
    def normalise(cam: np.ndarray) -> np.ndarray:
        cam = cv2.resize(np.asarray(cam, dtype=np.float64), (224, 224), interpolation=cv2.INTER_CUBIC)
        if np.isnan(cam).any() or cam.min() == cam.max():
            return np.zeros_like(cam)
        cam = cam - cam.min()
        return cam / cam.max()

    @staticmethod
    def boxes(scoremap: np.ndarray, tau: float, multi_contour: bool) -> list[list[int]]:
        height, width = scoremap.shape
        gray = (scoremap * 255).astype(np.uint8)
        _, mask = cv2.threshold(gray, int(tau * np.max(gray)), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            return [[0, 0, 0, 0]]
        if not multi_contour:
            largest = contours[0]
            for contour in contours[1:]:
                if cv2.contourArea(contour) > cv2.contourArea(largest):  # first of the tied largest
                    largest = contour
            contours = [largest]
        result = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            result.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        return result

    @staticmethod
    def resize_gt(box: list[float], width: int, height: int) -> list[int]:
        x0, y0, x1, y1 = map(float, box)
        return [int(x0 * 224 / width), int(y0 * 224 / height), int(x1 * 224 / width), int(y1 * 224 / height)]

    @staticmethod
    def iou(a: list[int], b: list[int]) -> float:
        inter = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
        union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
        return 0.0 if union <= 0 else inter / union

    @classmethod
    def max_box_acc(cls, cases: list[tuple], version: str, interval: float = 0.01) -> dict[int, float]:
        taus = np.arange(0, 1, interval)
        deltas = (30, 50, 70) if version == "v2" else (50,)
        correct = {d: np.zeros(len(taus)) for d in deltas}
        for cam, (width, height), gt_boxes in cases:
            scoremap = cls.normalise(cam)
            gts = [cls.resize_gt(g, width, height) for g in gt_boxes]
            for t, tau in enumerate(taus):
                best = max(cls.iou(p, g) for p in cls.boxes(scoremap, tau, version == "v2") for g in gts)
                for d in deltas:
                    correct[d][t] += best >= d / 100
        return {d: float((correct[d] * 100.0 / len(cases)).max()) for d in deltas}


def ours(cases: list[tuple], version: str, interval: float = 0.01) -> dict[int, float]:
    ids = [f"img{i}" for i in range(len(cases))]
    evaluator = MaxBoxAccEvaluator({i: c[2] for i, c in zip(ids, cases)}, {i: c[1] for i, c in zip(ids, cases)},
                                   version=version, interval=interval)
    for image_id, (cam, _, _) in zip(ids, cases):
        evaluator.accumulate(cam, image_id)
    return evaluator.compute().per_delta


def zeros(size: int = 224) -> np.ndarray:
    return np.zeros((size, size), dtype=np.float32)


def hot_origin() -> np.ndarray:
    m = zeros()
    m[0, 0] = 1.0
    return m


def blob_with_a_nan() -> np.ndarray:
    m = zeros()
    m[100:140, 100:140] = 1.0
    m[5, 5] = np.nan
    return m


# GT boxes in original pixels with the image (width, height): [0, 0, 1, 1] of a 448² image resizes to
# int(1·224/448) = 0, i.e. [0, 0, 0, 0]; of a 224² image it stays [0, 0, 1, 1]; [0, 0, 3, 3] stays itself.
CORNER_TO_ZERO = ((448, 448), [[0, 0, 1, 1]])
CORNER_2PX = ((224, 224), [[0, 0, 1, 1]])
CORNER_4PX = ((224, 224), [[0, 0, 3, 3]])
ON_THE_BLOB = ((224, 224), [[100, 100, 139, 139]])

CASES = {
    "all-zero, corner GT → [0,0,0,0]": (zeros(), *CORNER_TO_ZERO),
    "all-zero, corner GT [0,0,3,3]": (zeros(), *CORNER_4PX),
    "constant 0.5, corner GT → [0,0,0,0]": (np.full((224, 224), 0.5, np.float32), *CORNER_TO_ZERO),
    "hot pixel at the origin, GT → [0,0,0,0]": (hot_origin(), *CORNER_TO_ZERO),
    "hot pixel at the origin, GT [0,0,1,1]": (hot_origin(), *CORNER_2PX),
    "a NaN pixel, corner GT → [0,0,0,0]": (blob_with_a_nan(), *CORNER_TO_ZERO),
    "a NaN pixel, GT on the blob": (blob_with_a_nan(), *ON_THE_BLOB),
    "constant 1.0 at 512², GT → [0,0,0,0]": (np.ones((512, 512), np.float32), (512, 512), [[0, 0, 1, 1]]),
    "constant 0.3 at 28² (a CAM), GT → [0,0,0,0]": (np.full((28, 28), 0.3, np.float32), *CORNER_TO_ZERO),
}

# Hand-checked values of the reference itself (v2 per δ), so the oracle is pinned, not just compared.
HAND = {
    "all-zero, corner GT → [0,0,0,0]": 100.0,  # box [0,0,0,0] vs GT [0,0,0,0]: IoU 1
    "all-zero, corner GT [0,0,3,3]": 0.0,  # IoU 1/16
    "constant 0.5, corner GT → [0,0,0,0]": 100.0,  # constant → all-zero map
    "hot pixel at the origin, GT → [0,0,0,0]": 0.0,  # rect (0,0,1,1) → box [0,0,1,1]: IoU 1/4 < 0.3
    "hot pixel at the origin, GT [0,0,1,1]": 100.0,  # the same box: IoU 1
    "a NaN pixel, corner GT → [0,0,0,0]": 100.0,  # any NaN → all-zero map
    "a NaN pixel, GT on the blob": 0.0,
}


@pytest.mark.parametrize("name", list(HAND))
def test_the_reference_gives_the_hand_values(name):
    assert Reference.max_box_acc([CASES[name]], "v2") == {30: HAND[name], 50: HAND[name], 70: HAND[name]}


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("name", list(CASES))
def test_each_case_agrees_with_wsolevaluation(name, version):
    case = CASES[name]
    assert ours([case], version) == Reference.max_box_acc([case], version)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_all_cases_together_agree_with_wsolevaluation(version):
    cases = list(CASES.values())
    assert ours(cases, version) == Reference.max_box_acc(cases, version)
