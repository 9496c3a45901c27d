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
# A full run then checks every preset against the result its header claims, a line
#   # expect: bytes 18395, ratio 93.7, accuracy 91.34%, entropy coding huffman
# (entropy coding: the coders its shared layers ended up with, huffman and/or range) and fails,
# naming the preset and the number, if the file size is off by more than PRESET_BYTES_TOL percent
# (default 1), the accuracy by more than PRESET_ACC_TOL points (default 0.2) or the coders differ.
# Training is seeded, so on one machine a rerun gives the same file; the tolerances leave room for
# another CPU's floating-point rounding, not for a change of recipe or coder. FAST=1 skips the check.
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

python3 - "$WORK" "$ROOT/tools/presets" "${FAST:-0}" "${PRESETS[@]}" <<'PY'
import json, os, re, sys
work, preset_dir, fast, presets = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
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

# Each preset's claim (its header's `# expect:` line) against this run.
def coders(d):
    used = {"range" if l["encoding"] == "shared-sparse-ac" else "huffman"
            for l in d["layers"] if l["encoding"].startswith("shared-")}
    return "+".join(sorted(used)) or "none"

if fast:
    print("\npreset check skipped: FAST=1 runs a smoke setting, the headers claim full runs")
    sys.exit(0)
bytes_tol = float(os.environ.get("PRESET_BYTES_TOL", "1"))
acc_tol = float(os.environ.get("PRESET_ACC_TOL", "0.2"))
claim_re = re.compile(r"^# expect: bytes (\d+), ratio ([\d.]+), accuracy ([\d.]+)%, entropy coding ([a-z+]+)$", re.M)
failures = []
print(f"\npreset check (bytes within {bytes_tol}%, accuracy within {acc_tol} pp, same coders):")
for p in presets:
    m = claim_re.search(open(f"{preset_dir}/{p}.toml").read())
    if not m:
        failures.append(f"{p}: no '# expect: bytes …, ratio …, accuracy …%, entropy coding …' line in its header")
        continue
    want_bytes, want_ratio, want_acc, want_coders = int(m[1]), float(m[2]), float(m[3]), m[4]
    d = json.load(open(f"{work}/{p}.json"))
    got_bytes, got_ratio = d["file_bytes"], d["ratio_vs_dense_weights"]
    got_acc, got_coders = 100 * d["accuracy_after"], coders(d)
    problems = []
    if abs(got_bytes - want_bytes) > want_bytes * bytes_tol / 100:
        problems.append(f"{got_bytes} bytes ({got_ratio:.1f}x), header says {want_bytes} ({want_ratio:.1f}x)")
    if abs(got_acc - want_acc) > acc_tol:
        problems.append(f"accuracy {got_acc:.2f}%, header says {want_acc:.2f}%")
    if got_coders != want_coders:
        problems.append(f"entropy coding {got_coders}, header says {want_coders}")
    if abs(want_ratio - d["dense_weight_bytes"] / want_bytes) > 0.05:
        problems.append(f"header's ratio {want_ratio} is not {d['dense_weight_bytes']} dense bytes / {want_bytes}")
    verdict = "; ".join(problems) if problems else "as claimed"
    print(f"  {p}: {got_bytes} B, {got_ratio:.1f}x, {got_acc:.2f}%, {got_coders}: {verdict}")
    failures += [f"{p}: {x}" for x in problems]
if failures:
    print("\nPRESET CHECK FAILED: a preset no longer gives what its header says. Find what changed, or"
          " rerun it and update the header's numbers and its `# expect:` line:", file=sys.stderr)
    for f in failures:
        print(f"  {f}", file=sys.stderr)
    sys.exit(1)
PY
