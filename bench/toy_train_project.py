"""train-project end to end on the toy world: learn a word the base model never learned, then measure it.

    python bench/toy_train_project.py --work /tmp/toy-tp            # the shipped toy model
    python bench/toy_train_project.py --work /tmp/toy-tp --unet-steps 100

Through the command line, as a user would: `toy-world` writes novel-class (heart) images, `init`
makes a project on the toy model with the label `heart`, `import` brings in its weakly labelled train
images, `train-project` learns its concept token (stage 1) and then, on a second call,
`--finetune-unet` (stage 2). Held-out novel test images are then localized with the untrained word
(f_d only) and with the learned token at several ω, before and after stage 2, at the toy preset's τ.

It also trains tokens for the base classes in a second project and exports them, for the
f_d / f_r / ω rows of `bench/toy_world.py --tokens`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import environment, write_json
from toy_world import Split, compute_maps

from genpromp_annotate.presets import preset
from genpromp_annotate.toy.evaluate import box_ious_over_taus
from genpromp_annotate.toy.world import BASE_CLASSES, NOVEL_CLASSES, split_images

OMEGAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def cli(*args: str) -> str:
    """Run one `genpromp-annotate` command in a fresh process; its output is echoed and returned."""
    command = [sys.executable, "-m", "genpromp_annotate", *args]
    print("$ genpromp-annotate " + " ".join(args), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    print(done.stdout.strip()[-2000:], flush=True)
    if done.returncode:
        print(done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"command failed ({done.returncode}): {' '.join(args)}")
    return done.stdout


def gt_known_rows(loc, test: Split, tau: float, label: str) -> dict[str, Any]:
    """GT-known (percent) and mean IoU of the novel test images at τ, untrained word then each ω."""
    def score(localizer) -> dict[str, float]:
        ious = box_ious_over_taus(compute_maps(localizer, test.images, test.labels), test.gts, (tau,))[:, 0]
        return {"gt_known": round(100 * float((ious >= 0.5).mean()), 2), "mean_iou": round(float(ious.mean()), 4)}

    rows: dict[str, Any] = {"omega": {}}
    for omega in OMEGAS:
        rows["omega"][str(omega)] = score(loc.with_config(loc.config.replace(omega=omega)))
        print(f"    ω {omega:.1f}: {rows['omega'][str(omega)]}", flush=True)
    return rows


def project_localizer(db: str, project: str):
    from genpromp_annotate.project import build_localizer
    from genpromp_annotate.store.database import open_store

    store = open_store(db)
    try:
        return build_localizer(store, project, device="cpu", dtype="float32").localizer
    finally:
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (images, database, tokens)")
    parser.add_argument("--model", type=Path, help="toy model folder (default: the shipped one, written to --work)")
    parser.add_argument("--images", type=int, default=48, help="weakly labelled novel-class train images")
    parser.add_argument("--test-images", type=int, default=150)
    parser.add_argument("--base-images", type=int, default=40, help="train images per base class (ablation tokens)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-3, help="stage 1 LR, unscaled (the toy's word vectors have std 1)")
    parser.add_argument("--unet-steps", type=int, default=100)
    parser.add_argument("--unet-lr", type=float, default=2e-5)
    parser.add_argument("--meta-word", default=None,
                        help="the novel label's meta word (f_d, and where its token starts), e.g. circle; default: "
                             "the method's rule, i.e. the untrained word itself")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    db = f"sqlite:///{work / 'toy.db'}"
    (work / "toy.db").unlink(missing_ok=True)
    model = args.model or work / "toy-sd"
    if args.model is None:
        cli("toy-model", str(model))
    toy = preset("toy")
    label = NOVEL_CLASSES[0]
    timings: dict[str, float] = {}

    cli("toy-world", str(work / "novel-train"), "--split", "train", "--images", str(args.images), "--novel")
    cli("toy-world", str(work / "base-train"), "--split", "train", "--images", str(args.base_images * 6))
    meta = ["--meta-word", args.meta_word] if args.meta_word else []
    cli("--db", db, "init", "hearts", "--model", str(model), "--label", label, "--preset", "toy", *meta)
    cli("--db", db, "import", "hearts", str(work / "novel-train" / "dataset" / "TOY"), "--format", "imagefolder")
    test = Split(split_images("test", args.test_images, seed=0, novel=True))

    print("before training (untrained word):", flush=True)
    from genpromp_annotate.engine.loading import load_stable_diffusion
    from genpromp_annotate.engine.localizer import Localizer

    plain = Localizer(load_stable_diffusion(str(model), device="cpu", dtype="float32"), toy)
    untrained = gt_known_rows(plain, test, toy.threshold, label)["omega"]["0.0"]
    meta_word_row = None
    if args.meta_word:
        print(f"before training (meta word {args.meta_word!r}, f_d):", flush=True)
        meta_word_row = gt_known_rows(project_localizer(db, "hearts"), test, toy.threshold, label)["omega"]["0.0"]
    started = time.perf_counter()
    train_common = ["--epochs", str(args.epochs), "--lr", str(args.lr), "--no-scale-lr"]
    cli("--db", db, "train-project", "hearts", *train_common, "--export-tokens", str(work / "tokens-hearts"))
    timings["stage1_s"] = round(time.perf_counter() - started, 1)
    print("learned token:", flush=True)
    stage1 = gt_known_rows(project_localizer(db, "hearts"), test, toy.threshold, label)

    started = time.perf_counter()
    cli("--db", db, "train-project", "hearts", "--finetune-unet", "--unet-steps", str(args.unet_steps),
        "--unet-lr", str(args.unet_lr))
    timings["stage2_s"] = round(time.perf_counter() - started, 1)
    print("learned token + finetuned UNet:", flush=True)
    stage2 = gt_known_rows(project_localizer(db, "hearts"), test, toy.threshold, label)

    # Base-class tokens for bench/toy_world.py's f_d / f_r / ω rows (heart images are refused as unknown).
    cli("--db", db, "init", "shapes", "--model", str(model), *[arg for c in BASE_CLASSES for arg in ("--label", c)],
        "--preset", "toy")
    cli("--db", db, "import", "shapes", str(work / "base-train" / "dataset" / "TOY"), "--format", "imagefolder")
    started = time.perf_counter()
    cli("--db", db, "train-project", "shapes", *train_common, "--export-tokens", str(work / "tokens-base"))
    timings["base_stage1_s"] = round(time.perf_counter() - started, 1)

    best_stage1 = max(v["gt_known"] for v in stage1["omega"].values())
    payload = {
        "environment": environment(torch.device("cpu"), torch.float32), "model": str(model), "preset": toy.as_dict(),
        "novel_class": label, "train_images": args.images, "test_images": len(test.items),
        "training": {"epochs": args.epochs, "lr": args.lr, "unet_steps": args.unet_steps, "unet_lr": args.unet_lr},
        "meta_word": args.meta_word, "meta_word_before_training": meta_word_row,
        "untrained_word": untrained, "learned_token": stage1, "learned_token_and_unet": stage2,
        "gain_points_at_omega_0.6": round(stage1["omega"]["0.6"]["gt_known"] - untrained["gt_known"], 2),
        "gain_points_best_omega": round(best_stage1 - untrained["gt_known"], 2),
        "timings": timings, "base_tokens": str(work / "tokens-base"),
    }
    path = write_json("toy-train-project", payload, args.out)
    print(f"untrained word {untrained['gt_known']:.1f} % → learned token (ω 0.6) {stage1['omega']['0.6']['gt_known']:.1f} %"
          f" → + UNet {stage2['omega']['0.6']['gt_known']:.1f} %; wrote {path}")
    print(f"base-class tokens for bench/toy_world.py: --tokens {work / 'tokens-base'}")


if __name__ == "__main__":
    main()
