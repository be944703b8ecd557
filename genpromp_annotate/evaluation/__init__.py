"""WSOL evaluation: inclusive-pixel IoU, GT-known / Top-1 / Top-5 Loc, MaxBoxAcc(V2), benchmark layouts."""

from genpromp_annotate.evaluation.iou import BoxFormatError, iou_inclusive
from genpromp_annotate.evaluation.layouts import (
                                                  DatasetLayoutError,
                                                  EvalRecord,
                                                  read_class_predictions,
                                                  read_cub,
                                                  read_imagenet_val,
                                                  read_synset_mapping,
                                                  read_wsolevaluation,
)
from genpromp_annotate.evaluation.loc_metrics import ERROR_KINDS, LocEvaluator, LocSummary, evaluate_image
from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccEvaluator, MaxBoxAccResult, best_threshold

__all__ = ["ERROR_KINDS", "BoxFormatError", "DatasetLayoutError", "EvalRecord", "LocEvaluator", "LocSummary",
           "MaxBoxAccEvaluator", "MaxBoxAccResult", "best_threshold", "evaluate_image", "iou_inclusive",
           "read_class_predictions", "read_cub", "read_imagenet_val", "read_synset_mapping", "read_wsolevaluation"]
