"""Weak labels of tasks and their resolution to (category, Label Studio label)."""

from __future__ import annotations

from genpromp_annotate.labelstudio.label_config import parse_label_config
from genpromp_annotate.labelstudio.tasks import resolve_weak_label, weak_label_of
from tests.backend.conftest import LABEL_CONFIG

SETUP = parse_label_config(LABEL_CONFIG.replace("</View>", '<Choices name="cls" toName="image">'
                                                         '<Choice value="Cat"/></Choices></View>'), ["cat", "dog"])


def test_weak_label_sources_in_order():
    assert weak_label_of({"data": {"label": " cat "}}, SETUP) == "cat"
    assert weak_label_of({"data": {"label": ["dog"]}}, SETUP) == "dog"
    choice = {"type": "choices", "from_name": "cls", "value": {"choices": ["Cat"]}}
    assert weak_label_of({"data": {}, "annotations": [{"result": [choice]}]}, SETUP) == "Cat"
    assert weak_label_of({"data": {}, "predictions": [{"result": [choice]}]}, SETUP) == "Cat"
    assert weak_label_of({"data": {}, "annotations": [{"was_cancelled": True, "result": [choice]}]}, SETUP) is None
    other = {**choice, "from_name": "not-ours"}
    assert weak_label_of({"data": {}, "annotations": [{"result": [other]}]}, SETUP) is None
    assert weak_label_of({"data": {"label": ""}}, SETUP) is None


def test_resolution():
    assert resolve_weak_label("Cat", SETUP, ["cat", "dog"]) == ("cat", "Cat")  # a label of the config
    assert resolve_weak_label("dog", SETUP, ["cat", "dog"]) == ("dog", "Dog")  # a category (predicted_values)
    assert resolve_weak_label("DOG", SETUP, ["cat", "dog"]) == ("dog", "Dog")
    assert "neither" in resolve_weak_label("zebra", SETUP, ["cat", "dog"])
    no_label = resolve_weak_label("bird", SETUP, ["cat", "dog", "bird"])
    assert isinstance(no_label, str) and "no <Label>" in no_label
