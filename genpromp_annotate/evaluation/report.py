"""A benchmark report: one JSON-ready dict, rendered as a terminal table or Markdown.

The dict (`build_report`) holds the run's description (`meta`: layout, root, model, maps version,
settings, …), the image counts, the images that failed, `loc` (LocSummary.as_dict: GT-known / Top-1 /
Top-5 Loc, the error breakdown, mean IoU), `maxboxacc` (`v1` and `v2`, MaxBoxAccResult.as_dict with
string δ keys) and, for CUB and ImageNet, the paper's numbers for comparison. Percentages throughout.
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


def _maxboxacc_dict(result: MaxBoxAccResult | None) -> dict | None:
    if result is None:
        return None
    data = result.as_dict()
    data["per_delta"] = {str(k): v for k, v in data["per_delta"].items()}
    data["best_threshold"] = {str(k): v for k, v in data["best_threshold"].items()}
    return data


def build_report(meta: Mapping[str, object], loc: LocSummary, maxboxacc_v1: MaxBoxAccResult | None,
                 maxboxacc_v2: MaxBoxAccResult | None, failed: Sequence[tuple[str, str]] = (),
                 images: Mapping[str, int] | None = None, timing: Mapping[str, float | None] | None = None) -> dict:
    """The report as a JSON-ready dict (see the module docstring).

    Args:
        meta: what was evaluated and how; `meta["layout"]` picks the paper numbers.
        failed: (image id, error message) of the images that could not be evaluated.
        images: counts such as total / evaluated / computed / cached.
    """
    return {
        "meta": dict(meta),
        "images": dict(images or {}),
        "failed": [{"image_id": image_id, "error": error} for image_id, error in failed],
        "loc": loc.as_dict(),
        "maxboxacc": {"v1": _maxboxacc_dict(maxboxacc_v1), "v2": _maxboxacc_dict(maxboxacc_v2)},
        "timing": dict(timing or {}),
        "paper": PAPER_NUMBERS.get(str(meta.get("layout"))),
    }


def _pct(value: object) -> str:
    return "—" if value is None else f"{float(value):.2f}"  # type: ignore[arg-type]


def _rows(report: Mapping) -> list[tuple[str, str, str]]:
    """(metric, value, paper) rows shared by the table and the Markdown."""
    loc, paper = report["loc"], report.get("paper") or {}
    rows = [(name, _pct(loc.get(key)), _pct(paper.get(key)) if paper else "") for key, name in _LOC_ROWS]
    v1, v2 = report["maxboxacc"]["v1"], report["maxboxacc"]["v2"]
    if v1 is not None:
        rows.append(("MaxBoxAcc (δ=50)", _pct(v1["value"]), ""))
    if v2 is not None:
        rows.append(("MaxBoxAccV2 (mean)", _pct(v2["value"]), ""))
        for delta, value in v2["per_delta"].items():
            rows.append((f"  δ={delta} (τ={v2['best_threshold'][delta]:.2f})", _pct(value), ""))
    rows.append(("mean IoU", f"{loc['mean_iou']:.4f}", ""))
    return rows


def _errors_line(report: Mapping) -> str:
    errors = report["loc"]["errors"]
    return ", ".join(f"{kind} {errors.get(kind, 0.0):.1f}%" for kind in ERROR_KINDS)


def _header(report: Mapping) -> str:
    meta, images = report["meta"], report["images"]
    split = f" ({meta['split']})" if meta.get("split") else ""
    total = f" of {images['total']}" if "total" in images else ""
    return (f"{meta.get('layout', '?')}{split}: {report['loc']['count']} image(s) evaluated{total}, "
            f"{len(report['failed'])} failed; maps version {meta.get('maps_version', '?')}")


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
    lines += ["", f"errors (top-1): {_errors_line(report)}"]
    if report["failed"]:
        lines.append(f"failed images: {len(report['failed'])} (see the JSON report's \"failed\" list)")
    return "\n".join(lines)


def report_markdown(report: Mapping) -> str:
    """The same numbers as a Markdown document (settings, metrics table, error breakdown, failures)."""
    meta = report["meta"]
    has_paper = bool(report.get("paper"))
    lines = ["# Benchmark report", "", _header(report), "", "| setting | value |", "|---|---|"]
    for key in ("layout", "root", "split", "model", "tokens", "classifier", "maps_version", "meta_word"):
        if meta.get(key) is not None:
            lines.append(f"| {key} | `{meta[key]}` |")
    config = meta.get("config")
    if isinstance(config, Mapping):
        lines.append(f"| settings | `{', '.join(f'{k}={v}' for k, v in config.items())}` |")
    lines += ["", "| metric | value |" + (" paper |" if has_paper else ""),
              "|---|---:|" + ("---:|" if has_paper else "")]
    for name, value, paper in _rows(report):
        lines.append(f"| {name.strip()} | {value} |" + (f" {paper} |" if has_paper else ""))
    lines += ["", f"Error breakdown of the top-1 prediction: {_errors_line(report)}.", ""]
    if report["failed"]:
        lines += ["## Failed images", ""] + [f"- `{f['image_id']}`: {f['error']}" for f in report["failed"]] + [""]
    return "\n".join(lines)


def write_report_json(report: Mapping, path: Path) -> Path:
    """The report as indented JSON, written atomically."""
    return write_text_atomic(path, json.dumps(report, indent=2, default=str) + "\n")
