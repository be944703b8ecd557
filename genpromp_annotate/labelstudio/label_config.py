"""Label Studio label config → what the backend predicts: the RectangleLabels/Image pair, the mapping of
Label Studio label values to project categories, and the per-project settings (method §8)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from genpromp_annotate.errors import LabelConfigError
from genpromp_annotate.log import get_logger

logger = get_logger(__name__)

DEFAULT_LABEL_FIELD = "label"

# Settings a project can set in `extra_params` (JSON) or as attributes of its RectangleLabels tag.
# `model_score_threshold` is the attribute name Label Studio's own ML examples use for a minimum score.
_SETTING_ALIASES = {
    "threshold": "threshold", "tau": "threshold",
    "omega": "omega",
    "multi_box": "multi_box", "multi-box": "multi_box",
    "min_score": "min_score", "model_score_threshold": "min_score",
    "label_field": "label_field",
    "project": "project",
    "preset": "preset",
}


@dataclass(frozen=True)
class ProjectSettings:
    """Per Label Studio project settings; None means "the project's own value"."""

    project: str | None = None
    threshold: float | None = None
    omega: float | None = None
    multi_box: bool | None = None
    preset: str | None = None
    min_score: float = 0.0
    label_field: str = DEFAULT_LABEL_FIELD

    def config_changes(self) -> dict[str, Any]:
        """The LocalizeConfig fields these settings override."""
        return {k: v for k, v in (("threshold", self.threshold), ("omega", self.omega),
                                  ("multi_box", self.multi_box)) if v is not None}


@dataclass(frozen=True)
class LabelingSetup:
    """What one label config asks of the backend.

    Attributes:
        from_name: the RectangleLabels control's name; to_name: its Image object's name.
        image_key: the task data field holding the image URL (`$image` → `image`).
        label_to_category: Label Studio label value → project category, for every known label.
        unknown_labels: label values that match no category (reported, never guessed).
        choices_names: names of Choices controls whose annotations can carry a task's weak label.
    """

    from_name: str
    to_name: str
    image_key: str
    labels: tuple[str, ...]
    label_to_category: dict[str, str]
    unknown_labels: tuple[str, ...]
    choices_names: tuple[str, ...] = ()
    settings: ProjectSettings = field(default_factory=ProjectSettings)

    def label_for_category(self, category: str) -> str | None:
        """The first Label Studio label value that maps to `category`, or None."""
        for label, cat in self.label_to_category.items():
            if cat == category:
                return label
        return None


def match_category(value: str, categories: Iterable[str]) -> str | None:
    """`value` itself when it is a category, else the one category equal to it ignoring case."""
    categories = list(categories)
    if value in categories:
        return value
    folded = [c for c in categories if c.casefold() == value.strip().casefold()]
    return folded[0] if len(folded) == 1 else None


def map_labels(labels_attrs: Mapping[str, Mapping[str, Any]], categories: Iterable[str] | None
               ) -> tuple[dict[str, str], list[str]]:
    """Label values → categories: exact, then the `predicted_values` attribute, then ignoring case.

    `categories=None` (no project store) makes every label its own category.
    Returns the mapping and the label values that matched nothing, in config order.
    """
    if categories is None:
        return {label: label for label in labels_attrs}, []
    categories = list(categories)
    mapping: dict[str, str] = {}
    unknown: list[str] = []
    for label, attrs in labels_attrs.items():
        if label in categories:
            mapping[label] = label
            continue
        aliases = [a.strip() for a in str(attrs.get("predicted_values") or "").split(",") if a.strip()]
        found = next((a for a in aliases if a in categories), None)
        found = found or next((m for m in (match_category(a, categories) for a in aliases) if m), None)
        found = found or match_category(label, categories)
        if found:
            mapping[label] = found
        else:
            unknown.append(label)
    return mapping, unknown


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise LabelConfigError(f"setting {name!r} must be true or false, got {value!r}")


def _as_fraction(value: Any, name: str, upper_open: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LabelConfigError(f"setting {name!r} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0 or (upper_open and number == 1.0):
        raise LabelConfigError(f"setting {name!r} must lie in [0, 1{')' if upper_open else ']'}, got {number}")
    return number


def parse_extra_params(extra_params: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """`extra_params` of /setup (a JSON string, a dict or null) as a dict."""
    if extra_params in (None, "", "null"):
        return {}
    if isinstance(extra_params, Mapping):
        return dict(extra_params)
    try:
        value = json.loads(extra_params)
    except (TypeError, json.JSONDecodeError) as exc:
        raise LabelConfigError(f"extra_params must be a JSON object such as {{\"project\": \"birds\"}}, "
                               f"got {str(extra_params)[:80]!r} ({exc})") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LabelConfigError(f"extra_params must be a JSON object, got {type(value).__name__}")
    return value


def settings_from(*sources: Mapping[str, Any] | None) -> ProjectSettings:
    """ProjectSettings from attribute/param dicts; later sources win. Unknown keys are ignored."""
    values: dict[str, Any] = {}
    for source in sources:
        for key, raw in (source or {}).items():
            name = _SETTING_ALIASES.get(str(key).lower())
            if name is None or raw is None or raw == "":
                continue
            if name == "threshold":
                values[name] = _as_fraction(raw, key, upper_open=True)
            elif name in ("omega", "min_score"):
                values[name] = _as_fraction(raw, key)
            elif name == "multi_box":
                values[name] = _as_bool(raw, key)
            else:
                values[name] = str(raw)
    return ProjectSettings(**values)


def parse_label_config(config_xml: str, categories: Iterable[str] | None = None,
                       extra_params: str | Mapping[str, Any] | None = None) -> LabelingSetup:
    """Find the RectangleLabels/Image pair of a label config and map its labels to `categories`.

    Args:
        config_xml: the project's label config (`<View>…</View>`).
        categories: the project's category names; None maps every label to itself.
        extra_params: the ML backend's extra params (they win over RectangleLabels attributes).
    Raises:
        LabelConfigError when the XML cannot be parsed or holds no RectangleLabels bound to an Image.
    """
    from label_studio_sdk.label_interface import LabelInterface

    if not config_xml or not str(config_xml).strip():
        raise LabelConfigError("the label config is empty; expected <View> with <Image> and <RectangleLabels>")
    try:
        interface = LabelInterface(config_xml)
    except Exception as exc:  # noqa: BLE001 - the SDK raises parser, lookup and validation errors of many types
        raise LabelConfigError(f"the label config cannot be parsed: {exc}") from None

    pair = None
    choices: list[str] = []
    for control in interface.controls:
        if control.tag == "Choices":
            choices.append(control.name)
        if control.tag != "RectangleLabels" or pair is not None:
            continue
        for to_name in control.to_name or []:
            try:
                obj = interface.get_object(to_name)
            except Exception:  # noqa: BLE001, S112 - an unknown toName: LabelInterface reports it; keep looking
                continue
            if obj.tag == "Image":
                pair = (control, obj)
                break
    if pair is None:
        tags = sorted({c.tag for c in interface.controls})
        raise LabelConfigError("the label config has no <RectangleLabels> bound to an <Image> (toName); "
                               f"it has controls {', '.join(tags) or 'none'}. Add e.g. "
                               "<RectangleLabels name=\"label\" toName=\"image\"><Label value=\"cat\"/></RectangleLabels>")
    control, obj = pair
    value = str(obj.value or "")
    if not value.startswith("$") or len(value) < 2:
        raise LabelConfigError(f"<Image name={obj.name!r}> has value={value!r}; expected a task field like \"$image\"")
    labels_attrs = {label: dict(getattr(tag, "attr", None) or {}) for label, tag in (control.labels_attrs or {}).items()}
    mapping, unknown = map_labels(labels_attrs, categories)
    if unknown:
        logger.warning("label config: %d label(s) match no project category and get no boxes: %s",
                       len(unknown), ", ".join(unknown))
    settings = settings_from(control.attr, parse_extra_params(extra_params))
    return LabelingSetup(
        from_name=control.name, to_name=obj.name, image_key=value[1:], labels=tuple(labels_attrs),
        label_to_category=mapping, unknown_labels=tuple(unknown), choices_names=tuple(choices), settings=settings,
    )
