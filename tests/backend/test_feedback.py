"""Webhook work: human boxes from annotations, and the re-calibration after enough new boxes."""

from __future__ import annotations

from genpromp_annotate.labelstudio.label_config import parse_label_config
from genpromp_annotate.labelstudio.tasks import human_boxes_of
from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate_backend.feedback import Feedback
from genpromp_annotate_backend.projects import ModelProject
from tests.backend.conftest import LABEL_CONFIG

SETUP = parse_label_config(LABEL_CONFIG, ["cat"])


def _region(label, rid="r"):
    return {"id": rid, "type": "rectanglelabels", "from_name": "box", "to_name": "image", "original_width": 50,
            "original_height": 20, "value": {"x": 10, "y": 50, "width": 20, "height": 50, "rotation": 0,
                                             "rectanglelabels": [label]}}


def test_human_boxes_of_an_annotation():
    choice = {"type": "choices", "from_name": "cls", "value": {"choices": ["Cat"]}}
    boxes, problems = human_boxes_of({"result": [_region("Cat", "a"), _region("Dog", "b"), choice]}, SETUP, "img.png")
    (box,) = boxes
    # x 10 % of 50 = 5 → 5 + 20 % of 50 = 15; y 50 % of 20 = 10 → 10 + 50 % of 20 = 20
    assert (box.category, box.box.x1, box.box.y1, box.box.x2, box.box.y2, box.external_id) == ("cat", 5, 10, 15, 20, "a")
    assert problems == ["region b: label 'Dog' matches no project category"]


def test_enough_new_human_boxes_trigger_an_improvement(backend_model, make_image, media_root):
    from genpromp_annotate.labelstudio.media import MediaFetcher

    project = ModelProject("p", backend_model, LocalizeConfig())
    feedback = Feedback(retrain_every=2, fetcher=MediaFetcher(roots=[media_root]))
    image = str(make_image(folder=media_root))
    try:
        for annotation_id in (1, 2, 3):
            payload = {"annotation": {"id": annotation_id, "result": [_region("Cat")]},
                       "task": {"id": 9, "data": {"image": image, "label": "Cat"}}}
            assert feedback.submit("ANNOTATION_CREATED", payload, SETUP, project)
        assert feedback.wait_idle(30)
        stats = feedback.stats()["feedback"]
        assert stats["human_boxes"] == 3 and stats["improvements"] == 1  # after the 2nd box, not the 3rd
        assert "no project store" in stats["improvement"]["skipped"]
        assert not feedback.submit("PROJECT_CREATED", {}, SETUP, project)
    finally:
        feedback.shutdown()
