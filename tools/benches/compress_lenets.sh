#!/usr/bin/env bash
# The whole pipeline (prune + retrain, share + fine-tune, Huffman-code, decode and measure in the
# core) on the reference LeNets, with the presets in tools/presets/: prints one table of sizes,
# ratios against dense float32 weights, test accuracies (of the decoded .nnz, 10,000 images) and
# wall time per run.
#
#   tools/benches/compress_lenets.sh            # full runs (LeNet-5 takes tens of minutes)
#   FAST=1 tools/benches/compress_lenets.sh     # smoke setting: 2,000 training images, 1 epoch per stage
#   tools/benches/compress_lenets.sh paper-lenet300 lenet300-78x   # only these presets
#
# Needs Fashion-MNIST (scripts/setup.sh) and ../shared/models (or NNZIP_SHARED).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SHARED="${NNZIP_SHARED:-$ROOT/../shared}"
WORK="${NNZIP_BENCH_DIR:-$ROOT/target/bench/compress}"
mkdir -p "$WORK"
PROFILE="${NNZIP_BENCH_PROFILE:-release}"
(cd "$ROOT" && cargo build -q --profile "$PROFILE" -p nnzip-tools --bin nnzip)
NNZIP="$ROOT/target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/nnzip"

PRESETS=("$@")
[ ${#PRESETS[@]} -gt 0 ] || PRESETS=(paper-lenet300 lenet300-78x paper-lenet5 lenet5-100x)
FAST_ARGS=()
[ "${FAST:-0}" = 1 ] && FAST_ARGS=(--train-limit 2000 --rounds 1 --retrain-epochs 1 --fine-tune-epochs 1)

for p in "${PRESETS[@]}"; do
    case "$p" in *lenet300*) model=lenet300 ;; *lenet5*) model=lenet5 ;; *) echo "unknown preset $p" >&2; exit 1 ;; esac
    start=$SECONDS
    "$NNZIP" compress "$SHARED/models/$model.onnx" --config "$ROOT/tools/presets/$p.toml" \
        "${FAST_ARGS[@]}" --json -o "$WORK/$p.nnz" > "$WORK/$p.json"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['wall_seconds']=float(sys.argv[2]); json.dump(d, open(sys.argv[1],'w'))" \
        "$WORK/$p.json" "$((SECONDS - start))"
done

python3 - "$WORK" "${PRESETS[@]}" <<'PY'
import json, sys
work, presets = sys.argv[1], sys.argv[2:]
rows = [("preset", "bytes", "ratio", "dense acc", "compressed acc", "loss pp", "kept", "wall s")]
for p in presets:
    d = json.load(open(f"{work}/{p}.json"))
    shared = [l for l in d["layers"] if l["bits"] > 0]
    total = sum(__import__("math").prod(l["shape"]) for l in shared)
    kept = sum(l["density"] * __import__("math").prod(l["shape"]) for l in shared) / max(total, 1)
    b, a = d["accuracy_before"], d["accuracy_after"]
    rows.append((p, str(d["file_bytes"]), f'{d["ratio_vs_dense_weights"]:.1f}x', f"{100*b:.2f}%", f"{100*a:.2f}%",
                 f"{100*(a-b):+.2f}", f"{100*kept:.1f}%", f'{d["wall_seconds"]:.0f}'))
w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for i, r in enumerate(rows):
    print("  ".join(c.ljust(w[j]) if j == 0 else c.rjust(w[j]) for j, c in enumerate(r)))
    if i == 0:
        print("  ".join("-" * x for x in w))
PY
