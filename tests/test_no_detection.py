"""An image where no pixel survives τ is annotated and has no box: not in the store, exports or counts.

Before the `annotations` table the engine returned the reference's `[0, 0, 1, 1]` (score 0) for such an
image and `annotate` stored it as a box, so it reached every export and `push` as a real region.
"""

import numpy as np
from bad_images import good_image
from sqlalchemy import func, select

from genpromp_annotate.engine import boxes as boxes_module
from genpromp_annotate.engine.boxes import boxes_from_map, reference_box
from genpromp_annotate.exports.coco import coco_dataset
from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate.project import (
    add_labels,
    annotate_project,
    build_localizer,
    import_records,
    load_boxes_frame,
    pending_count,
    project_settings,
)
from genpromp_annotate.sources import read_source
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.models import Prediction

SETTINGS = LocalizeConfig(threshold=0.3, image_size=256)


def test_engine_returns_no_box_and_the_evaluator_keeps_the_reference_box():
    flat = np.zeros((64, 64), dtype=np.float32)
    assert boxes_from_map(flat, 0.5) == []
    box = reference_box(flat, 0.5)
    assert (box.x1, box.y1, box.x2, box.y2, box.score) == (0, 0, 1, 1, 0.0)


def test_an_image_without_detection_is_annotated_with_no_box(db, tiny_model, tiny_model_dir, tmp_path,
                                                             monkeypatch):
    # No pixel survives τ: the threshold step keeps nothing (the rest of the path is the real one).
    monkeypatch.setattr(boxes_module, "threshold_mask", lambda map_01, tau: np.zeros(map_01.shape, np.uint8))
    with db.write() as s:
        q.create_project(s, "p", str(tiny_model_dir), project_settings(SETTINGS))
    add_labels(db, "p", ["cat"], tiny_model.tokenizer)
    for i in range(2):
        good_image(tmp_path / "data" / "cat" / f"{i}.png", seed=i)
    import_records(db, "p", read_source(tmp_path / "data", "imagefolder"))
    runner = build_localizer(db, "p", model=tiny_model)

    summary = annotate_project(db, "p", runner, batch_size=2)
    assert (summary.images, summary.boxes, summary.errors) == (2, 0, [])
    with db.read() as s:
        assert s.scalar(select(func.count(Prediction.id))) == 0  # no fake box stored
        counts = {c.name: c for c in q.version_counts(s, q.get_project(s, "p"))}
    assert pending_count(db, "p", runner.model_version) == 0  # annotated: not taken again
    assert annotate_project(db, "p", runner, batch_size=2).images == 0
    assert (counts[runner.model_version].images, counts[runner.model_version].without_box) == (2, 2)

    frame = load_boxes_frame(db, "p")
    assert len(frame) == 2 and frame["x1"].isna().all()  # listed as images without a box
    dataset = coco_dataset(frame)
    assert len(dataset["images"]) == 2 and dataset["annotations"] == []
