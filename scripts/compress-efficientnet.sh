#!/usr/bin/env bash
# The app's bundled model: EfficientNet-Lite0 (../shared/models) compressed without labels, the
# dense model as the teacher, on the calibration photos of scripts/photos.sh; agreement reported
# on the evaluation photos, which no decision sees.
#
#   bash scripts/compress-efficientnet.sh [OUT.nnz]     # default out/efficientnet_lite0.nnz
#
# Takes about half an hour on 2 cores (input statistics for GPTQ, per-layer sensitivity, bit
# allocation, fine-tuning by distillation); does nothing when OUT exists and is newer than this
# script (delete it to redo).
# The report goes to OUT.txt; the per-layer sensitivity (~10 min) is kept in
# OUT-without-.nnz.sensitivity.json, so a re-run with other allocation or fine-tuning settings
# skips it (one measured on other photos, another ladder or by a version of nnzip that shares
# differently is refused); GPTQ's input statistics are kept in out/gptq-statistics/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/efficientnet_lite0.nnz}
shared=${NNZIP_SHARED:-../shared}
# The report beside it tells this script's output from a file of the same name written otherwise
# (an earlier setup.sh packed the dense model there).
if [ -f "$out" ] && [ -f "$out.txt" ] && [ "$out" -nt "$0" ]; then
  echo "$out is up to date" >&2
  exit 0
fi
mkdir -p "$(dirname "$out")"
{ read -r cal; read -r eval; } < <(bash scripts/photos.sh)
cargo build -q --release -p nnzip-tools --bin nnzip
target/release/nnzip compress "$shared/models/efficientnet_lite0.onnx" -o "$out" \
  --preprocess efficientnet-lite --labels "$shared/models/imagenet_labels.txt" \
  --calibration "$cal" --holdout "$eval" --sensitivity-cache "${out%.nnz}.sensitivity.json" \
  --statistics-cache "$(dirname "$out")/gptq-statistics" \
  --target-ratio 8 --fine-tune-epochs 8 --fine-tune-optimizer adam --fine-tune-lr 0.0001 \
  | tee "$out.txt"
target/release/nnzip classify "$out" "$shared"/images/*.jpg --top-k 3
