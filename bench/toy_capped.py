"""The val choice under a wrong-word cap (`bench/toy_preset.py --max-wrong-word P`), scored on test.

    python bench/toy_capped.py bench/results/toy-preset-cpu-<time>.json     # 300 test images

Scores the choice's setting at its val τ on the held-out test images of the base classes with the right
class word and with a wrong one (the next base class), beside the shipped toy preset, in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import environment, write_json
from toy_world import Split, base_split, compute_maps, load_toy_model

from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.presets import preset
from genpromp_annotate.toy.evaluate import box_ious_over_taus
from genpromp_annotate.toy.world import wrong_word


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("choice_json", type=Path)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = json.loads(args.choice_json.read_text())
    choice = grid["choice"]
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in choice.items() if not k.startswith(("tau", "val_"))}
    model, _ = load_toy_model(None)
    test = Split(base_split("test", args.images, 0))
    rows = []
    for name, config in (("toy preset", preset("toy")),
                         (f"val choice, wrong word <= {grid['max_wrong_word']} % on val",
                          preset("toy").replace(threshold=choice["tau"], **settings))):
        loc = Localizer(model, config)
        row = {"row": name, "settings": config.as_dict()}
        for key, words in (("gt_known", test.labels), ("wrong_word", [wrong_word(x) for x in test.labels])):
            ious = box_ious_over_taus(compute_maps(loc, test.images, words), test.gts, (config.threshold,))[:, 0]
            row[key] = round(100 * float((ious >= 0.5).mean()), 2)
        rows.append(row)
        print(f"  {name:<45} τ {config.threshold:.2f}  GT-known {row['gt_known']:6.2f}  wrong word {row['wrong_word']:6.2f}",
              flush=True)
    payload = {"environment": environment(torch.device("cpu"), torch.float32), "choice_json": str(args.choice_json),
               "test_images": len(test.items), "val_choice": choice, "rows": rows}
    print(f"wrote {write_json('toy-capped', payload, args.out)}")


if __name__ == "__main__":
    main()
