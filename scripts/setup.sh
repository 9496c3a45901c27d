#!/usr/bin/env bash
# One command for a fresh machine: install what nnzip needs, build it, and run the main job on the
# built-in defaults: compress LeNet-5 with a quick version of its preset (size and accuracy before
# and after), then pack the reference EfficientNet-Lite0 and classify the sample photos with it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  fi
fi

cargo build --release -p nnzip-tools
nnzip=target/release/nnzip
shared=../shared
mkdir -p out
if [ -f "$shared/models/lenet5.onnx" ]; then
  # The main job in a few minutes: the LeNet-5 preset's recipe (prune, retrain, share, fine-tune,
  # code) with 2 pruning rounds of one epoch instead of 5 of four (3 epochs of training in all
  # against 21), so it loses more accuracy than the preset's own run, whose header gives its numbers.
  echo "== compressing LeNet-5 (a quick run of tools/presets/lenet5-100x.toml) =="
  "$nnzip" compress "$shared/models/lenet5.onnx" --config tools/presets/lenet5-100x.toml \
    --rounds 2 --retrain-epochs 1 -o out/lenet5-quick.nnz
fi
if [ -f "$shared/models/efficientnet_lite0.onnx" ]; then
  echo "== EfficientNet-Lite0, packed losslessly: the sample photos =="
  # Not out/efficientnet_lite0.nnz: that is the compressed model of compress-efficientnet.sh,
  # which skips its half hour when the file is already there (and the Android build bundles it).
  packed=out/efficientnet_lite0.packed.nnz
  "$nnzip" pack "$shared/models/efficientnet_lite0.onnx" -o "$packed" \
    --preprocess efficientnet-lite --labels "$shared/models/imagenet_labels.txt"
  "$nnzip" inspect "$packed" | head -20
  "$nnzip" classify "$packed" "$shared"/images/*.jpg --top-k 3
else
  echo "note: $shared/models/ not found beside the project; skipping the demo" >&2
fi
