"""A benchmark report: one JSON-ready dict, rendered as a terminal table or Markdown.

Top-level keys of the dict (`build_report`), percentages 0–100:

    gt_known_loc, top1_loc, top5_loc   Loc metrics at the τ of `thresholds["loc"]` (Top-1/Top-5 None
                                       without a classifier: `classifier` is then False)
    maxboxacc                          MaxBoxAcc (v1: largest contour, δ = 50)
    maxboxacc_v2                       MaxBoxAccV2, the mean over δ ∈ {30, 50, 70}
    maxboxacc_v2_per_iou               {"30": …, "50": …, "70": …}
    errors                             Cls / correct / M-Ins / Part / More / Wrong of the top-1 prediction
    thresholds                         τ of the Loc metrics and where it came from; the best τ of every
                                       metric on this split (for the Loc metrics an oracle, for reference)
    n_images                           images scored
    mean_iou, per_class, classifier, meta, images, failed, timing, paper (CUB / ImageNet numbers)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from genpromp_annotate.atomic_files import write_text_atomic
from genpromp_annotate.evaluation.loc_metrics import ERROR_KINDS, LocSummary
from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccResult

# method §5: CUB with learned tokens and the original UNet; ImageNet with tokens and the finetuned UNet;
# Top-1/Top-5 with EfficientNet-B7 predictions. They need real Stable Diffusion weights and trained tokens.
PAPER_NUMBERS: dict[str, dict[str, float]] = {
    "cub": {"top1_loc": 87.0, "top5_loc": 96.1, "gt_known_loc": 98.0},
    "imagenet": {"top1_loc": 65.2, "top5_loc": 73.4, "gt_known_loc": 75.0},
}

_LOC_ROWS = (("gt_known_loc", "GT-known Loc"), ("top1_loc", "Top-1 Loc"), ("top5_loc", "Top-5 Loc"))
NO_CLASSIFIER = "no classifier given: only GT-known Loc; the error breakdown assumes the class is right"


def maxboxacc_thresholds(v1: MaxBoxAccResult | None, v2: MaxBoxAccResult | None) -> dict[str, object]:
    """The τ MaxBoxAcc (δ = 50) and MaxBoxAccV2 (per δ) picked on the split, by their definition."""
    return {"maxboxacc": v1.best_threshold[50] if v1 is not None else None,
            "maxboxacc_v2": {str(k): t for k, t in v2.best_threshold.items()} if v2 is not None else None}


def build_report(meta: Mapping[str, object], loc: LocSummary, maxboxacc_v1: MaxBoxAccResult | None,
                 maxboxacc_v2: MaxBoxAccResult | None, thresholds: Mapping[str, object] | None = None,
                 failed: Sequence[tuple[str, str]] = (), images: Mapping[str, int] | None = None,
                 timing: Mapping[str, float | None] | None = None,
                 per_class: Mapping[str, Mapping[str, float]] | None = None, paper: str | None = None) -> dict:
    """The report as a JSON-ready dict (see the module docstring).

    Args:
        meta: what was evaluated and how.
        thresholds: `{"loc": τ, "loc_source": "...", …}` (MaxBoxAcc's own τ are added here).
        failed: (image id, error message) of the images that could not be evaluated.
        images: counts such as total / evaluated / computed / cached.
        paper: "cub" or "imagenet" to show the paper's numbers beside ours.
    """
    summary = loc.as_dict()
    return {
        "gt_known_loc": summary["gt_known_loc"],
        "top1_loc": summary["top1_loc"],
        "top5_loc": summary["top5_loc"],
        "maxboxacc": maxboxacc_v1.value if maxboxacc_v1 is not None else None,
        "maxboxacc_v2": maxboxacc_v2.value if maxboxacc_v2 is not None else None,
        "maxboxacc_v2_per_iou": ({str(k): v for k, v in maxboxacc_v2.per_delta.items()}
                                 if maxboxacc_v2 is not None else None),
        "errors": summary["errors"],
        "thresholds": {**dict(thresholds or {}), **maxboxacc_thresholds(maxboxacc_v1, maxboxacc_v2)},
        "n_images": summary["count"],
        "mean_iou": summary["mean_iou"],
        "classifier": summary["top1_loc"] is not None,
        "per_class": {k: dict(v) for k, v in (per_class or {}).items()},
        "meta": dict(meta),
        "images": dict(images or {}),
        "failed": [{"image_id": image_id, "error": error} for image_id, error in failed],
        "timing": dict(timing or {}),
        "paper": PAPER_NUMBERS.get(paper) if paper else None,
    }


def _pct(value: object) -> str:
    return "—" if value is None else f"{float(value):.2f}"  # type: ignore[arg-type]


def _rows(report: Mapping) -> list[tuple[str, str, str]]:
    """(metric, value, paper) rows shared by the table and the Markdown."""
    paper = report.get("paper") or {}
    rows = [(name, _pct(report.get(key)), _pct(paper.get(key)) if paper else "") for key, name in _LOC_ROWS]
    taus = report["thresholds"]
    if report["maxboxacc"] is not None:
        rows.append((f"MaxBoxAcc (δ=50, τ={taus['maxboxacc']:.2f})", _pct(report["maxboxacc"]), ""))
    if report["maxboxacc_v2"] is not None:
        rows.append(("MaxBoxAccV2 (mean of δ)", _pct(report["maxboxacc_v2"]), ""))
        for delta, value in report["maxboxacc_v2_per_iou"].items():
            rows.append((f"  δ={delta} (τ={taus['maxboxacc_v2'][delta]:.2f})", _pct(value), ""))
    rows.append(("mean IoU", f"{report['mean_iou']:.4f}", ""))
    return rows


def _errors_line(report: Mapping) -> str:
    errors = report["errors"]
    return ", ".join(f"{kind} {errors.get(kind, 0.0):.1f}%" for kind in ERROR_KINDS)


def _threshold_lines(report: Mapping) -> list[str]:
    taus = report["thresholds"]
    lines = []
    if taus.get("loc") is not None:
        lines.append(f"τ of the Loc metrics: {taus['loc']:.2f} ({taus.get('loc_source', 'given')})")
    oracle = taus.get("best_on_this_split") or {}
    best = [f"{name} {entry['value']:.2f} at τ={entry['threshold']:.2f}" for key, name in _LOC_ROWS
            if (entry := oracle.get(key))]
    if best:
        lines.append("best τ on this split (oracle, for reference only): " + ", ".join(best))
    return lines


def _header(report: Mapping) -> str:
    meta, images = report["meta"], report["images"]
    split = f" ({meta['split']})" if meta.get("split") else ""
    total = f" of {images['total']}" if "total" in images else ""
    return (f"{meta.get('dataset', '?')}{split}: {report['n_images']} image(s) evaluated{total}, "
            f"{len(report['failed'])} failed; maps {meta.get('maps_version', '?')}")


def report_table(report: Mapping) -> str:
    """A fixed-width terminal table: metric, value and (CUB/ImageNet) the paper's number."""
    rows = _rows(report)
    has_paper = bool(report.get("paper"))
    width = max(len(r[0]) for r in rows)
    lines = [_header(report), ""]
    title = f"{'metric':<{width}}  {'value':>7}" + (f"  {'paper':>7}" if has_paper else "")
    lines += [title, "-" * len(title)]
    for name, value, paper in rows:
        lines.append(f"{name:<{width}}  {value:>7}" + (f"  {paper:>7}" if has_paper else ""))
    lines += [""] + _threshold_lines(report) + [f"errors (top-1): {_errors_line(report)}"]
    if not report["classifier"]:
        lines.append(f"note: {NO_CLASSIFIER}")
    if report["failed"]:
        lines.append(f"failed images: {len(report['failed'])} (see the JSON report's \"failed\" list)")
    return "\n".join(lines)


def report_markdown(report: Mapping, grid_file: str | None = None) -> str:
    """The report as a Markdown document: settings, metrics, thresholds, errors, per class, failures."""
    meta = report["meta"]
    has_paper = bool(report.get("paper"))
    lines = ["# Benchmark report", "", _header(report), "", "| setting | value |", "|---|---|"]
    for key in ("dataset", "root", "split", "model", "unet", "tokens", "maps", "classifier", "maps_version",
                "meta_word"):
        if meta.get(key) is not None:
            lines.append(f"| {key} | `{meta[key]}` |")
    config = meta.get("config")
    if isinstance(config, Mapping):
        lines.append(f"| settings | `{', '.join(f'{k}={v}' for k, v in config.items())}` |")
    lines += ["", "| metric | value |" + (" paper |" if has_paper else ""),
              "|---|---:|" + ("---:|" if has_paper else "")]
    for name, value, paper in _rows(report):
        lines.append(f"| {name.strip()} | {value} |" + (f" {paper} |" if has_paper else ""))
    lines += [""] + [f"- {line}" for line in _threshold_lines(report)]
    lines += [f"- Error breakdown of the top-1 prediction: {_errors_line(report)}."]
    if not report["classifier"]:
        lines.append(f"- Note: {NO_CLASSIFIER}.")
    if grid_file:
        lines += ["", "## Best and worst images", "",
                  "Ground truth in green, the predicted box in red, the map as a heat overlay.", "",
                  f"![best and worst images]({grid_file})"]
    per_class = report.get("per_class") or {}
    if per_class:
        lines += ["", "## Per class (worst GT-known Loc first)", "", "| class | images | GT-known Loc | mean IoU |",
                  "|---|---:|---:|---:|"]
        for name, entry in sorted(per_class.items(), key=lambda item: (item[1]["gt_known_loc"], item[0])):
            lines.append(f"| {name} | {entry['n']} | {entry['gt_known_loc']:.2f} | {entry['mean_iou']:.4f} |")
    if report["failed"]:
        lines += ["", "## Failed images", ""] + [f"- `{f['image_id']}`: {f['error']}" for f in report["failed"]]
    return "\n".join(lines) + "\n"


def write_report_json(report: Mapping, path: Path) -> Path:
    """The report as indented JSON, written atomically."""
    return write_text_atomic(path, json.dumps(report, indent=2, default=str) + "\n")
