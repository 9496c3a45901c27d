#!/usr/bin/env bash
# The nine classic architectures of the onnx wheel's backend test data (`light/`: AlexNet,
# DenseNet-121, Inception v1 and v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512), as a
# new user would bring them: seeded random weights in place of their ConstantOfShape ones
# (tools/benches/architectures.py), then for each
#   nnzip pack -> load -> classify the photos: top 5 and probabilities against onnxruntime's;
#   nnzip compress without data (one shot: weight sharing, no pruning) -> size ratio against
#   the ONNX file, and top-5 agreement of the compressed file with the dense one.
#
#   tools/benches/architectures.sh                     # all nine (VGG-19 alone is 550 MB: ~15 min)
#   MODELS="squeezenet resnet50" tools/benches/architectures.sh
#   SEED=1 PHOTOS=DIR tools/benches/architectures.sh   # other weights, other photos
#   NNZIP=target/debug/nnzip tools/benches/architectures.sh   # with a build at hand
#
# Python side (onnx, onnxruntime, numpy, pillow from PyPI) in target/bench/venv, made once.
# Work files in target/bench/architectures/ (the models are kept between runs).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${NNZIP_BENCH_DIR:-$ROOT/target/bench}"
VENV="$WORK/venv"
OUT="$WORK/architectures"
SEED="${SEED:-0}"
PHOTOS="${PHOTOS:-$ROOT/../shared/images}"
LABELS="$ROOT/../shared/models/imagenet_labels.txt"
MODELS="${MODELS:-bvlc_alexnet densenet121 inception_v1 inception_v2 resnet50 shufflenet squeezenet vgg19 zfnet512}"
mkdir -p "$OUT"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import onnx, onnxruntime, numpy, PIL" 2>/dev/null; then
    echo "creating $VENV and installing onnx, onnxruntime, numpy, pillow from PyPI (once)..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q onnx onnxruntime numpy pillow
fi
PY="$VENV/bin/python"
BENCH="$ROOT/tools/benches/architectures.py"
# NNZIP=target/debug/nnzip takes a build at hand (a dev build optimises the dependencies and
# nnzip-tools anyway) instead of building the release one.
if [ -z "${NNZIP:-}" ]; then
    (cd "$ROOT" && cargo build -q --release -p nnzip-tools --bin nnzip)
    NNZIP="$ROOT/target/release/nnzip"
fi

"$PY" "$BENCH" photos "$PHOTOS" "$OUT/photos"
PNGS=("$OUT"/photos/*.png)
seconds() { local t0=$1; echo "$(( $(date +%s) - t0 ))"; }

rows=()
for m in $MODELS; do
    base="$OUT/$m-seed$SEED"
    if [ ! -s "$base.onnx" ]; then
        "$PY" "$BENCH" make "$m" "$base.onnx.tmp" "$SEED" "${PNGS[@]}"
        mv "$base.onnx.tmp" "$base.onnx"
    fi
    "$PY" "$BENCH" ort "$base.onnx" "${PNGS[@]}" > "$base.ort.json"
    t0=$(date +%s)
    "$NNZIP" pack "$base.onnx" -o "$base.nnz" --preprocess imagenet --labels "$LABELS" >/dev/null
    pack_s=$(seconds "$t0")
    "$NNZIP" classify "$base.nnz" "${PNGS[@]}" --top-k 5 --json > "$base.nnzip.json"
    read -r ort_top1 ort_top5 _ n ort_diff < <("$PY" "$BENCH" compare "$base.ort.json" "$base.nnzip.json")
    t0=$(date +%s)
    "$NNZIP" compress "$base.onnx" -o "$base.shared.nnz" --preprocess imagenet --labels "$LABELS" >/dev/null
    compress_s=$(seconds "$t0")
    "$NNZIP" classify "$base.shared.nnz" "${PNGS[@]}" --top-k 5 --json > "$base.shared.json"
    read -r c_top1 c_top5 c_overlap _ _ < <("$PY" "$BENCH" compare "$base.nnzip.json" "$base.shared.json")
    onnx_bytes=$(stat -c %s "$base.onnx")
    shared_bytes=$(stat -c %s "$base.shared.nnz")
    top_p=$("$PY" -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["top"][0]["probability"])' "$base.nnzip.json")
    rows+=("$m|$onnx_bytes|$ort_top1/$n|$ort_top5/$n|$ort_diff|$top_p|$shared_bytes|$c_top1/$n|$c_top5/$n|$c_overlap|$pack_s|$compress_s")
    echo "done: ${rows[-1]}" >&2
done

"$PY" - "$SEED" "${rows[@]}" <<'PYTABLE'
import sys
seed, rows = sys.argv[1], [r.split("|") for r in sys.argv[2:]]
print(f"seed {seed}; dense = `nnzip pack` (lossless), shared = `nnzip compress` without data")
print("| model | ONNX | dense top-1 = ort | dense top-5 = ort (order too) | largest prob. diff vs ort | "
      "first photo's top-1 prob. | shared | ratio | shared top-1 = dense | shared top-5 = dense | "
      "top-5 classes in common | pack s | compress s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for m, ob, o1, o5, od, tp, sb, c1, c5, co, ps, cs in rows:
    mb = lambda b: f"{int(b) / 1e6:.1f} MB"
    tp = f"{float(tp):.3f}"
    print(f"| {m} | {mb(ob)} | {o1} | {o5} | {od} | {tp} | {mb(sb)} | {int(ob) / int(sb):.2f}× | {c1} | {c5} | {co} | {ps} | {cs} |")
PYTABLE
