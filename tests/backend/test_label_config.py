"""Label config parsing with the SDK's LabelInterface; label → category mapping; per-project settings."""

from __future__ import annotations

import pytest

from genpromp_annotate.errors import LabelConfigError
from genpromp_annotate.labelstudio.label_config import (
    map_labels,
    parse_extra_params,
    parse_label_config,
    settings_from,
)

CONFIG = """<View>
  <Text name="caption" value="$caption"/>
  <Image name="photo" value="$img"/>
  <Choices name="species" toName="photo"><Choice value="Goldfish"/></Choices>
  <RectangleLabels name="boxes" toName="photo" model_score_threshold="0.2" multi_box="true">
    <Label value="goldfish, Carassius auratus"/>
    <Label value="Fish" predicted_values="unknown,electric ray"/>
    <Label value="TENCH"/>
    <Label value="zebra"/>
  </RectangleLabels>
</View>"""
CATEGORIES = ["goldfish, Carassius auratus", "electric ray", "tench"]


def test_pair_labels_and_mapping_exact_predicted_values_case_insensitive():
    setup = parse_label_config(CONFIG, CATEGORIES)
    assert (setup.from_name, setup.to_name, setup.image_key) == ("boxes", "photo", "img")
    assert setup.label_to_category == {"goldfish, Carassius auratus": "goldfish, Carassius auratus",
                                       "Fish": "electric ray", "TENCH": "tench"}
    assert setup.unknown_labels == ("zebra",)
    assert setup.choices_names == ("species",)
    assert setup.label_for_category("electric ray") == "Fish"


def test_settings_from_attributes_and_extra_params_which_win():
    setup = parse_label_config(CONFIG, CATEGORIES, '{"threshold": 0.3, "multi_box": false, "project": "fish"}')
    assert setup.settings.min_score == 0.2  # model_score_threshold attribute
    assert setup.settings.multi_box is False and setup.settings.threshold == 0.3
    assert setup.settings.project == "fish"
    assert setup.settings.config_changes() == {"threshold": 0.3, "multi_box": False}


def test_no_categories_maps_labels_to_themselves():
    mapping, unknown = map_labels({"a": {}, "B": {}}, None)
    assert mapping == {"a": "a", "B": "B"} and unknown == []


def test_ambiguous_case_insensitive_match_is_not_guessed():
    mapping, unknown = map_labels({"CAT": {}}, ["cat", "Cat"])
    assert mapping == {} and unknown == ["CAT"]


@pytest.mark.parametrize("config, message", [
    ("", "empty"),
    ("<View><Image name='i' value='$i'/></View>", "RectangleLabels"),
    ("<View><Text name='t' value='$t'/><RectangleLabels name='r' toName='t'><Label value='a'/></RectangleLabels></View>",
     "RectangleLabels"),
    ("<View><Image", "parsed"),
])
def test_unusable_configs_are_refused(config, message):
    with pytest.raises(LabelConfigError, match=message):
        parse_label_config(config)


def test_extra_params_forms():
    assert parse_extra_params(None) == parse_extra_params("") == parse_extra_params("null") == {}
    assert parse_extra_params({"a": 1}) == {"a": 1}
    with pytest.raises(LabelConfigError, match="JSON object"):
        parse_extra_params("[1, 2]")


@pytest.mark.parametrize("params, message", [({"threshold": 1.0}, "threshold"), ({"omega": "x"}, "omega"),
                                             ({"multi_box": "maybe"}, "multi_box")])
def test_bad_settings_name_the_setting(params, message):
    with pytest.raises(LabelConfigError, match=message):
        settings_from(params)
