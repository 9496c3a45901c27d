#!/usr/bin/env bash
# Batch-1 latency and load-to-ready time of .nnz files in the core runtime (tract), next to
# onnxruntime (PyPI) on the dense ONNX: same machine, same run, one thread each.
#
#   tools/benches/latency_vs_ort.sh DENSE.onnx [FILE.nnz …]
#   tools/benches/latency_vs_ort.sh ../shared/models/efficientnet_lite0.onnx out/efficientnet_lite0.nnz
#
# Without .nnz files, the dense ONNX is packed losslessly in memory and timed as it is. Prints a
# table with the ratio nnzip / onnxruntime (below 1 is faster than onnxruntime).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
[ $# -ge 1 ] || { sed -n 2,9p "$0" >&2; exit 2; }
DENSE="$1"; shift
WORK="${NNZIP_BENCH_DIR:-$ROOT/target/bench}"
VENV="$WORK/venv"
mkdir -p "$WORK"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import onnxruntime, numpy" 2>/dev/null; then
    echo "creating $VENV and installing onnxruntime from PyPI (once)..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q onnxruntime numpy
fi
(cd "$ROOT" && cargo build -q --release -p nnzip-tools --bin nnzip)
NNZIP="$ROOT/target/release/nnzip"
RUNS="${RUNS:-100}"

ort=$(OMP_NUM_THREADS=1 "$VENV/bin/python" - "$DENSE" "$RUNS" <<'PY'
import json, sys, time
import numpy as np, onnxruntime as ort
path, runs = sys.argv[1], int(sys.argv[2])
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
loads = []
for _ in range(5):
    t = time.perf_counter()
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    loads.append(time.perf_counter() - t)
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
    times.append(time.perf_counter() - t)
print(json.dumps({"load_ms": float(np.median(loads)) * 1e3, "latency_ms": float(np.median(times)) * 1e3, "version": ort.__version__}))
PY
)
models=("$@")
[ ${#models[@]} -gt 0 ] || models=("$DENSE")
rows=()
for m in "${models[@]}"; do
    rows+=("$(taskset -c 0 "$NNZIP" bench "$m" --runs "$RUNS" --json)")
done
python3 - "$DENSE" "$ort" "${rows[@]}" <<'PY'
import json, os, sys
dense, ort = sys.argv[1], json.loads(sys.argv[2])
rows = [json.loads(r) for r in sys.argv[3:]]
print(f"{'model':<48} {'bytes':>10} {'load ms':>9} {'batch-1 ms':>11} {'vs ORT':>7}")
print("-" * 90)
print(f"{'onnxruntime ' + ort['version'] + ' on ' + os.path.basename(dense):<48} {os.path.getsize(dense):>10} {ort['load_ms']:>9.1f} {ort['latency_ms']:>11.2f} {'1.00×':>7}")
for r in rows:
    print(f"{'nnzip core (tract) on ' + os.path.basename(r['model']):<48} {r['file_bytes']:>10} {r['load_ms']:>9.1f} {r['latency_ms']:>11.2f} {r['latency_ms'] / ort['latency_ms']:>6.2f}×")
print("one thread each (onnxruntime: intra/inter-op 1; nnzip: pinned to one core), medians of", os.environ.get("RUNS", "100"), "runs")
PY
