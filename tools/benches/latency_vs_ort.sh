#!/usr/bin/env bash
# Batch-1 latency and load-to-ready time of .nnz files in the core runtime (tract), next to
# onnxruntime (PyPI) on the dense ONNX: same machine, same run, one thread each.
#
#   tools/benches/latency_vs_ort.sh DENSE.onnx [FILE.nnz …]
#   tools/benches/latency_vs_ort.sh ../shared/models/efficientnet_lite0.onnx effnet-8x.nnz
#
# Issue 26 measures the files the app loads: the compressed .nnz beside the dense ONNX it was
# made from. Without .nnz files, the dense ONNX is packed losslessly in memory (once, before the
# timed loads, as `nnzip bench` does with any ONNX) and that pack is timed. NNZIP names the
# nnzip binary to time (default: this checkout's release build, built first). ROUNDS
# (default 5) rounds alternate onnxruntime and each .nnz, so that a busy machine slows all alike;
# each round times LOADS loads (default 5) and RUNS runs (default 100) of each, and the table
# gives the medians over all of them, with both ratios nnzip / onnxruntime: load-to-ready
# against onnxruntime's session creation, and batch-1 latency (below 1 is faster).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
[ $# -ge 1 ] || { sed -n 2,14p "$0" >&2; exit 2; }
DENSE="$1"; shift
WORK="${NNZIP_BENCH_DIR:-$ROOT/target/bench}"
VENV="$WORK/venv"
mkdir -p "$WORK"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import onnxruntime, numpy" 2>/dev/null; then
    echo "creating $VENV and installing onnxruntime from PyPI (once)..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q onnxruntime numpy
fi
if [ -z "${NNZIP:-}" ]; then
    (cd "$ROOT" && cargo build -q --release -p nnzip-tools --bin nnzip)
    NNZIP="$ROOT/target/release/nnzip"
fi
RUNS="${RUNS:-100}"
LOADS="${LOADS:-5}"
ROUNDS="${ROUNDS:-5}"
export RUNS LOADS ROUNDS

# One round of onnxruntime: every load and run time, milliseconds, as JSON.
ort_round() {
    OMP_NUM_THREADS=1 taskset -c 0 "$VENV/bin/python" - "$DENSE" "$RUNS" "$LOADS" <<'PY'
import json, sys, time
import numpy as np, onnxruntime as ort
path, runs, loads_n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
loads = []
for _ in range(loads_n):
    t = time.perf_counter()
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    loads.append((time.perf_counter() - t) * 1e3)
inp = s.get_inputs()[0]
shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
n = int(np.prod(shape))
x = (((np.arange(n, dtype=np.uint64) * 2654435761) % 1000).astype(np.float32) / 500.0 - 1.0).reshape(shape)
for _ in range(3):
    s.run(None, {inp.name: x})
times = []
for _ in range(runs):
    t = time.perf_counter()
    s.run(None, {inp.name: x})
    times.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"loads": loads, "runs": times, "version": ort.__version__}))
PY
}

models=("$@")
[ ${#models[@]} -gt 0 ] || models=("$DENSE")
ORT_ROUNDS="$WORK/ort_rounds.jsonl"
NNZ_ROUNDS="$WORK/nnz_rounds.jsonl"
: > "$ORT_ROUNDS"
: > "$NNZ_ROUNDS"
for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    ort_round >> "$ORT_ROUNDS"
    for m in "${models[@]}"; do
        # As the app runs: tract's declutter makes errors in its normal course, and with
        # RUST_BACKTRACE set each one captures a backtrace (several ms of a load).
        env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE taskset -c 0 \
            "$NNZIP" bench "$m" --runs "$RUNS" --loads "$LOADS" --json >> "$NNZ_ROUNDS"
    done
done
python3 - "$DENSE" "$ORT_ROUNDS" "$NNZ_ROUNDS" <<'PY'
import json, os, statistics, sys
dense, ort_path, nnz_path = sys.argv[1:4]
ort_rounds = [json.loads(l) for l in open(ort_path)]
nnz_rounds = [json.loads(l) for l in open(nnz_path)]
ort_load = statistics.median(x for r in ort_rounds for x in r["loads"])
ort_run = statistics.median(x for r in ort_rounds for x in r["runs"])
models = list(dict.fromkeys(r["model"] for r in nnz_rounds))
print(f"{'model':<46} {'bytes':>10} {'load ms':>9} {'vs ORT':>7} {'batch-1 ms':>11} {'vs ORT':>7}")
print("-" * 95)
print(f"{'onnxruntime ' + ort_rounds[0]['version'] + ' on ' + os.path.basename(dense):<46} {os.path.getsize(dense):>10} {ort_load:>9.1f} {'1.00×':>7} {ort_run:>11.2f} {'1.00×':>7}")
for m in models:
    rs = [r for r in nnz_rounds if r["model"] == m]
    load = statistics.median(x for r in rs for x in r["load_samples_ms"])
    run = statistics.median(x for r in rs for x in r["latency_samples_ms"])
    name = "nnzip core (tract) on " + os.path.basename(m)
    print(f"{name:<46} {rs[0]['file_bytes']:>10} {load:>9.1f} {load / ort_load:>6.2f}× {run:>11.2f} {run / ort_run:>6.2f}×")
print(f"one thread each, pinned to one core (onnxruntime: intra/inter-op 1); medians of {len(ort_rounds)} alternating rounds "
      f"× {os.environ['LOADS']} loads and {os.environ['RUNS']} runs each; load: session creation / Model::from_bytes (batch 1)")
PY
