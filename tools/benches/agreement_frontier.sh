#!/usr/bin/env bash
# How agreement with the dense model grows with the file size: EfficientNet-Lite0 compressed
# without labels at several size goals, each measured with `nnzip agree` on the evaluation photos
# of scripts/photos.sh (never seen by compress), next to the binary16 reference (the dense model
# with every weight rounded to binary16, the mildest rounding a stored model can have).
#
#   tools/benches/agreement_frontier.sh [RATIO …]      # default: 8 6 5 4 3
#   FT=8 VIEWS=40 tools/benches/agreement_frontier.sh 8 # fine-tune 8 epochs, 40 views per photo
#
# The per-layer sensitivity is measured once (~15 min on 2 cores) and kept in
# target/frontier/sensitivity.json; every ratio then takes 4–6 min without fine-tuning (add
# ~15 min per ratio with FT=8). Prints one row per file: size, top-1 / top-5 agreement, KL, and
# top-1 agreement by the dense model's margin (top-1 − top-2 probability).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
ratios=("$@")
[ ${#ratios[@]} -gt 0 ] || ratios=(8 6 5 4 3)
FT=${FT:-0}
VIEWS=${VIEWS:-40}
shared=${NNZIP_SHARED:-../shared}
work=target/frontier
mkdir -p "$work"
{ read -r cal; read -r eval; } < <(bash scripts/photos.sh)
cargo build -q --release -p nnzip-tools --bin nnzip
nnzip=target/release/nnzip
model="$shared/models/efficientnet_lite0.onnx"
rows=()
for r in "${ratios[@]}"; do
  out="$work/effnet-${r}x-ft${FT}.nnz"
  "$nnzip" compress "$model" -o "$out" --preprocess efficientnet-lite \
    --labels "$shared/models/imagenet_labels.txt" --calibration "$cal" --holdout "$eval" \
    --sensitivity-cache "$work/sensitivity.json" --target-ratio "$r" \
    --fine-tune-epochs "$FT" --fine-tune-optimizer adam --fine-tune-lr 0.0001 \
    > "$out.txt" 2> "$out.log"
  "$nnzip" agree "$out" --teacher "$model" --photos "$eval" --views "$VIEWS" --json > "$out.agree.json"
  rows+=("$out.agree.json")
done
python3 - "$(stat -c %s "$model")" "${rows[@]}" <<'PY'
import json, os, sys
onnx = int(sys.argv[1])
def band(b):
    return "/".join(f"{x['agree'] / x['views'] * 100:.1f}" if x["views"] else "-" for x in b["bands"])
head = ["file", "bytes", "ratio", "top-1", "top-5", "KL", "confident top-1",
        "top-1 by dense margin <1 / 1-5 / 5-20 / >20 points"]
lines = []
ref = None
for path in sys.argv[2:]:
    d = json.load(open(path))
    a = d["agreement"]
    model = d["model"]
    size = os.path.getsize(model)
    lines.append([os.path.basename(model), f"{size:,}", f"{onnx / size:.2f}x", f"{a['top1'] * 100:.2f}%",
                  f"{a['top5'] * 100:.2f}%", f"{a['kl']:.5f}",
                  f"{a['confident_top1'] * 100:.1f}% of {a['confident_views']}", band(d["by_teacher_margin"])])
    ref = d["binary16_reference"]
if ref:
    a = ref["agreement"]
    lines.append(["reference: dense in binary16", f"~{onnx // 2:,}", "2.00x", f"{a['top1'] * 100:.2f}%",
                  f"{a['top5'] * 100:.2f}%", f"{a['kl']:.5f}",
                  f"{a['confident_top1'] * 100:.1f}% of {a['confident_views']}", band(ref["by_teacher_margin"])])
widths = [max(len(str(r[i])) for r in [head] + lines) for i in range(len(head))]
print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
print("  ".join("-" * w for w in widths))
for r in lines:
    print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
views = json.load(open(sys.argv[2]))["agreement"]["views"]
print(f"{views} views of the evaluation photos (never seen by compress); margin bands: the dense model's top-1 minus top-2 probability")
PY
