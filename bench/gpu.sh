#!/usr/bin/env bash
# The one GPU run of the speed issue, prepared and tried on CPU (SIZE=tiny DEVICE=cpu bash bench/gpu.sh):
# the engine at SD-v1.5 size in bf16 against the reference-style path, batch sizes 8…128; annotate end to
# end and peak GPU memory per batch size, with and without --compile; stage-1 training, packed vs one
# label at a time. Every figure goes to bench/results/ as JSON (bench/harness.py names the files).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE="${SIZE:-sd15}"
DEVICE="${DEVICE:-cuda}"
DTYPE="${DTYPE:-bfloat16}"
BATCHES="${BATCHES:-8,16,32,64,128}"
python bench/localize.py --sizes "$SIZE" --device "$DEVICE" --dtype "$DTYPE" --batch-sizes "$BATCHES" --rounds 2
python bench/localize.py --sizes "$SIZE" --device "$DEVICE" --dtype "$DTYPE" --batch-sizes "$BATCHES" \
    --annotate --skip-reference --compile --annotate-images "${ANNOTATE_IMAGES:-256}"
python bench/train.py --sizes "$SIZE" --device "$DEVICE" --dtype "$DTYPE" --resolution-sd15 512 --steps 10
