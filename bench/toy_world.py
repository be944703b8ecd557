"""Does the toy model localize? GT-known Loc, MaxBoxAccV2 and mean IoU on held-out toy-world images,
with controls and the paper's ablation in miniature, all in one run.

    python bench/toy_world.py                                  # the shipped toy model, 300 test images
    python bench/toy_world.py --model runs/toy-sd --tokens base-tokens.safetensors --images 600

τ is chosen on the val split for every row (never on test) and the preset's τ is reported beside it.
Rows: the toy preset; controls (a wrong class word, a centre box of the mean GT size, the same
architecture with random weights); f_d only / f_r only / ω = 0.6 (needs learned base-class tokens,
`--tokens`, e.g. from `bench/toy_train_project.py`); timesteps {0}, {99}, {0, 99}; resolutions 8, 16,
8+16; noise off; the paper's τ = 0.25; with a preset that refines its maps (self-attention
propagation, beyond the paper), the paper's unrefined map and the refinement's variants. On two-object
images, how often each word's box lands on its own object and how often on the other one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import environment, write_json

from genpromp_annotate.engine.loading import StableDiffusion, load_stable_diffusion
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.evaluation.iou import iou_inclusive
from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccEvaluator
from genpromp_annotate.presets import LocalizeConfig, preset
from genpromp_annotate.toy.evaluate import TAU_GRID, box_ious_over_taus, render_with_gt
from genpromp_annotate.toy.world import BASE_CLASSES, WorldImage, render_scene, split_images, wrong_word


def load_toy_model(folder: Path | None) -> tuple[StableDiffusion, Path]:
    """The toy model in `folder`, or the shipped one written to a temporary folder; fp32 on CPU."""
    if folder is None:
        from genpromp_annotate.toy.weights import write_toy_model
        folder = write_toy_model(Path(tempfile.mkdtemp()) / "toy-sd")
    return load_stable_diffusion(folder, device="cpu", dtype="float32"), folder


def base_split(split: str, n: int, seed: int) -> list[WorldImage]:
    """`n` images of the base classes (the split cycles over all classes; the novel ones are dropped)."""
    items = [it for it in split_images(split, n * 2, seed=seed) if it.label in BASE_CLASSES]
    return items[:n]


class Split:
    """Rendered images, labels and GT of one split, kept for every row."""

    def __init__(self, items: list[WorldImage]):
        self.items = items
        rendered = [render_with_gt(item) for item in items]
        self.images = [image for image, _ in rendered]
        self.gts = [gt for _, gt in rendered]
        self.labels = [item.label for item in items]


def compute_maps(loc: Localizer, images, labels, batch: int = 64) -> np.ndarray:
    return np.concatenate([loc.compute_maps(images[i:i + batch], labels[i:i + batch]).float().cpu().numpy()
                           for i in range(0, len(images), batch)])


def maxboxacc_v2(maps: np.ndarray, split: Split) -> float:
    ids = [item.image_id for item in split.items]
    evaluator = MaxBoxAccEvaluator(dict(zip(ids, split.gts)), {i: img.size for i, img in zip(ids, split.images)})
    for image_id, map_ in zip(ids, maps):
        evaluator.accumulate(map_, image_id)
    return evaluator.compute().value


def score_row(name: str, loc: Localizer, val: Split, test: Split, preset_tau: float,
              word=lambda label: label) -> dict[str, Any]:
    """τ chosen on val (best GT-known), then GT-known / mean IoU at that τ and at the preset's τ on test."""
    started = time.perf_counter()
    val_ious = box_ious_over_taus(compute_maps(loc, val.images, [word(x) for x in val.labels]), val.gts)
    val_acc = (val_ious >= 0.5).mean(axis=0)
    tau = TAU_GRID[int(np.argmax(val_acc))]
    test_maps = compute_maps(loc, test.images, [word(x) for x in test.labels])
    ious = box_ious_over_taus(test_maps, test.gts, (tau, preset_tau))
    row = {
        "row": name, "val_tau": tau, "val_gt_known": round(100 * float(val_acc.max()), 2),
        "gt_known": round(100 * float((ious[:, 0] >= 0.5).mean()), 2),
        "mean_iou": round(float(ious[:, 0].mean()), 4),
        "gt_known_at_preset_tau": round(100 * float((ious[:, 1] >= 0.5).mean()), 2),
        "maxboxacc_v2": round(maxboxacc_v2(test_maps, test), 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
    print(f"  {name:<34} τ_val {tau:.2f}  GT-known {row['gt_known']:6.2f}  (at preset τ {row['gt_known_at_preset_tau']:6.2f})"
          f"  MaxBoxAccV2 {row['maxboxacc_v2']:6.2f}  mIoU {row['mean_iou']:.3f}", flush=True)
    return row


def centre_box_row(test: Split) -> dict[str, Any]:
    """A box of the mean GT size at the image centre, for every image (no model)."""
    sizes = np.concatenate([gt[:, 2:] - gt[:, :2] for gt in test.gts])
    w, h = sizes.mean(axis=0)
    ious = []
    for image, gt in zip(test.images, test.gts):
        cx, cy = image.size[0] / 2, image.size[1] / 2
        box = np.array([[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]])
        ious.append(float(iou_inclusive(box, gt).max()))
    row = {"row": "control: centre box of mean GT size", "gt_known": round(100 * float(np.mean(np.array(ious) >= 0.5)), 2),
           "mean_iou": round(float(np.mean(ious)), 4)}
    print(f"  {row['row']:<34} GT-known {row['gt_known']:6.2f}  mIoU {row['mean_iou']:.3f}")
    return row


def two_object_rows(loc: Localizer, test: Split, tau: float) -> dict[str, Any]:
    """On test images with two base-class objects: where each word's box lands (IoU ≥ 0.5)."""
    images, words, own, other = [], [], [], []
    for item, image in zip(test.items, test.images):
        if len(item.scene.shapes) != 2 or any(s.cls not in BASE_CLASSES for s in item.scene.shapes):
            continue
        _, objects = render_scene(item.scene, *image.size)
        for cls, box in objects:
            images.append(image)
            words.append(cls)
            own.append(np.array([box], dtype=np.float64))
            other.append(np.array([b for c, b in objects if c != cls], dtype=np.float64))
    maps = compute_maps(loc, images, words)
    own_iou = box_ious_over_taus(maps, own, (tau,))[:, 0]
    other_iou = box_ious_over_taus(maps, other, (tau,))[:, 0]
    result = {"words": len(words), "own_object": round(100 * float((own_iou >= 0.5).mean()), 2),
              "other_object": round(100 * float((other_iou >= 0.5).mean()), 2)}
    print(f"  two-object images: {result['words']} words; box on its own object {result['own_object']:.1f} %, "
          f"on the other object {result['other_object']:.1f} %")
    return result


def read_tokens(path: Path) -> dict[str, torch.Tensor]:
    """label → learned embedding `(D,)` from a `learned_embeds.safetensors` file or a `--export-tokens` folder."""
    from safetensors.torch import load_file

    files = [path] if path.is_file() else sorted(path.rglob("learned_embeds.safetensors"))
    learned = {k: v for f in files for k, v in load_file(str(f)).items()}
    return {label: next(v for k, v in learned.items() if label in k).reshape(-1)
            for label in BASE_CLASSES if any(label in k for k in learned)}


def random_twin(model: StableDiffusion) -> StableDiffusion:
    """The same architecture and tokenizer with random weights (a model that cannot localize)."""
    from genpromp_annotate.toy.model import build_toy_components

    parts = build_toy_components(seed=12345)
    parts["vae"].register_to_config(scaling_factor=model.scaling_factor)
    return StableDiffusion(model.tokenizer, parts["text_encoder"], parts["vae"], parts["unet"], model.scheduler,
                           model.device, model.dtype, source="random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="toy model folder (default: the shipped one)")
    parser.add_argument("--tokens", type=Path, help="learned tokens of the base classes (f_r rows): a learned_embeds.safetensors file or an --export-tokens folder")
    parser.add_argument("--images", type=int, default=300, help="test images of the base classes")
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/toy-world-cpu-<time>.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, args.model = load_toy_model(args.model)
    toy = preset("toy")
    val = Split(base_split("val", args.val_images, args.seed))
    test = Split(base_split("test", args.images, args.seed))
    print(f"toy model {args.model}; {len(val.items)} val and {len(test.items)} test images of {', '.join(BASE_CLASSES)}")

    tokens = read_tokens(args.tokens) if args.tokens else {}

    def localizer(config: LocalizeConfig, m: StableDiffusion = model, with_tokens: bool = bool(tokens)) -> Localizer:
        loc = Localizer(m, config)
        if with_tokens:
            for label, embedding in tokens.items():
                loc.set_concept_token(label, embedding)
        return loc

    rows = []
    rows.append(score_row("toy preset" + (" (f_d only: no tokens)" if not tokens else ""),
                          localizer(toy), val, test, toy.threshold))
    rows.append(score_row("control: wrong class word", localizer(toy), val, test, toy.threshold, word=wrong_word))
    rows.append(centre_box_row(test))
    rows.append(score_row("control: random weights", localizer(toy, random_twin(model), False), val, test, toy.threshold))
    if tokens:
        rows.append(score_row("f_d only (ω = 0)", localizer(toy.replace(omega=0.0)), val, test, toy.threshold))
        rows.append(score_row("f_r only (ω = 1)", localizer(toy.replace(omega=1.0)), val, test, toy.threshold))
        rows.append(score_row("ω = 0.6 (paper)", localizer(toy.replace(omega=0.6)), val, test, toy.threshold))
    for steps in ((0,), (99,), (0, 99)):
        rows.append(score_row(f"timesteps {set(steps)}", localizer(toy.replace(timesteps=steps)), val, test, toy.threshold))
    for resolutions in ((8,), (16,), (8, 16)):
        rows.append(score_row(f"resolutions {'+'.join(map(str, resolutions))}",
                              localizer(toy.replace(resolutions=resolutions)), val, test, toy.threshold))
    rows.append(score_row("noise off", localizer(toy.replace(add_noise=False)), val, test, toy.threshold))
    if toy.propagation_side:  # the map refinement of the preset (beyond the paper), taken apart
        rows.append(score_row("the paper's map (no self-attention propagation)",
                              localizer(toy.replace(propagation_side=0)), val, test, toy.threshold))
        rows.append(score_row("propagation A·m, not sharpened", localizer(toy.replace(propagation_product=False)),
                              val, test, toy.threshold))
        rows.append(score_row("propagation, 2 steps", localizer(toy.replace(propagation_steps=2)), val, test,
                              toy.threshold))
    paper = LocalizeConfig(image_size=toy.image_size, preset="paper-at-64px")
    rows.append(score_row("paper settings (τ 0.25, r 8+16)", localizer(paper), val, test, paper.threshold))
    two = two_object_rows(localizer(toy), test, toy.threshold)

    payload = {"environment": environment(torch.device("cpu"), torch.float32), "model": str(args.model),
               "preset": toy.as_dict(), "tokens": str(args.tokens) if args.tokens else None,
               "test_images": len(test.items), "val_images": len(val.items), "seed": args.seed,
               "rows": rows, "two_object": two}
    path = write_json("toy-world", payload, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
