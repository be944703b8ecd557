"""The project API: one room for everything a project does with the store and the engine.

    from genpromp_annotate import project as gp
    gp.add_labels(store, "birds", ["cardinal"], gp.load_tokenizer(model))
    report = gp.import_records(store, "birds", read_source("data/", "imagefolder"))
    runner = gp.build_localizer(store, "birds", device="cpu")
    summary = gp.annotate_project(store, "birds", runner, batch_size=8)
    boxes = gp.load_boxes_frame(store, "birds")

Each concept lives in one module: settings (stored settings + overrides → the effective config),
version (one snapshot → the model version), labels, images (by content hash), localizer, annotate
(claim → decode → localize → store), boxes (the table behind every export), feedback (served boxes,
human boxes, re-calibration) and scores (box scores calibrated on human boxes, per model version).
The CLI and the Label Studio backend call this API; it never calls them.
"""

from genpromp_annotate.project.annotate import (
    AnnotateSummary,
    BatchReport,
    annotate_project,
    annotate_with_project_model,
    pending_count,
    version_to_push,
)
from genpromp_annotate.project.boxes import human_boxes_by_image, load_boxes_frame
from genpromp_annotate.project.feedback import (
    HUMAN_VERSION,
    ImageBoxes,
    categories_without_token,
    delete_human_boxes,
    recalibrate,
    record_human_boxes,
    record_predictions,
    train_missing_tokens,
)
from genpromp_annotate.project.images import (
    ImportReport,
    ensure_project_exists,
    image_for_file,
    import_records,
)
from genpromp_annotate.project.labels import add_labels, load_tokenizer
from genpromp_annotate.project.localizer import (
    ProjectLocalizer,
    build_localizer,
    current_model_version,
    load_finetuned_unet,
)
from genpromp_annotate.project.scores import (
    DEFAULT_MIN_BOXES,
    ScoreFit,
    calibrate_scores,
    calibrated_box,
    load_score_calibration,
)
from genpromp_annotate.project.settings import config_for_project, effective_config, project_settings
from genpromp_annotate.project.version import ProjectSnapshot, model_version, read_snapshot

__all__ = [
    "DEFAULT_MIN_BOXES", "HUMAN_VERSION", "AnnotateSummary", "BatchReport", "ImageBoxes", "ImportReport", "ProjectLocalizer",
    "ProjectSnapshot", "ScoreFit", "add_labels", "annotate_project", "annotate_with_project_model", "build_localizer", "calibrate_scores",
    "calibrated_box", "categories_without_token",
    "config_for_project", "content_digest", "current_model_version", "delete_human_boxes", "effective_config",
    "ensure_project_exists", "human_boxes_by_image", "image_for_file", "import_records", "load_boxes_frame",
    "load_finetuned_unet", "load_score_calibration", "load_tokenizer", "model_version", "pending_count", "project_settings", "read_snapshot",
    "recalibrate", "record_human_boxes", "record_predictions", "train_missing_tokens", "version_to_push",
]
