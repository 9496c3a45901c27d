#!/usr/bin/env python3
"""EfficientNet-Lite0's 16 depthwise layers, batch 1, one thread, pinned to one core: nnzip
before and after a change (two `op_profile` binaries) beside onnxruntime's own profiler.

    target/bench/venv/bin/python tools/benches/depthwise_vs_ort.py BEFORE_OP_PROFILE \
        AFTER_OP_PROFILE [ROUNDS=25] [RUNS=3] [CPU=0]

Each round runs the three in turn (before, after, onnxruntime; a fresh process each, RUNS
timed runs), so that a change in the machine's load falls on all three; the table gives the
median over the rounds of each layer's µs per run, the ratios of the medians, and the median
of the paired per-round ratio after / onnxruntime. onnxruntime's layer is its depthwise Conv
fused with the Clip after it (its node is named after the Clip); its profiler adds about 15 µs
per node, nnzip's `op_profile` about 1. Run it from the repository root in the venv of
tools/benches/latency_vs_ort.sh (target/bench/venv, with onnxruntime).
"""
import collections
import json
import os
import re
import statistics
import subprocess
import sys

MODEL = "../shared/models/efficientnet_lite0.onnx"
ORT_PROFILE = r"""
import collections, json, sys
import numpy as np, onnxruntime as ort
path, runs = sys.argv[1], int(sys.argv[2])
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
opts.enable_profiling = True; opts.profile_file_prefix = "/tmp/depthwise_vs_ort"
s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
inp = s.get_inputs()[0]
x = np.random.rand(*[d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]).astype(np.float32)
for _ in range(runs + 3): s.run(None, {inp.name: x})
f = s.end_profiling()
per = collections.defaultdict(float)
for e in json.load(open(f)):
    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
        per[e["name"][:-12]] += e["dur"]
import os; os.remove(f)
for k, v in per.items(): print("%.3f %s" % (v / (runs + 3), k))
"""


def nnzip(binary, runs, cpu):
    env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    out = subprocess.run(["taskset", "-c", cpu, binary, MODEL, runs, "200"],
                         capture_output=True, text=True, env=env, check=True).stdout
    t = {}
    for line in out.splitlines():
        m = re.match(r"\s*([0-9.]+) µs\s+\S+\s+(\S+)", line)
        if m:
            t[m.group(2)] = float(m.group(1))
    return [t[f"/_blocks.{b}/_depthwise_conv/Conv"] for b in range(16)]


def onnxruntime(runs, cpu):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(["taskset", "-c", cpu, sys.executable, "-c", ORT_PROFILE, MODEL, runs],
                         capture_output=True, text=True, env=env, check=True).stdout
    t = {}
    for line in out.splitlines():
        us, name = line.split(" ", 1)
        t[name] = float(us)

    def node(clip):
        return next(v for k, v in t.items() if k == clip or k.startswith(clip + "_output"))

    # Block 0 has no expansion: its depthwise convolution is followed by the first Clip.
    return [node("/_blocks.0/_swish/Clip")] + [node(f"/_blocks.{b}/_swish_1/Clip") for b in range(1, 16)]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    runs = sys.argv[4] if len(sys.argv) > 4 else "3"
    cpu = sys.argv[5] if len(sys.argv) > 5 else "0"
    res = collections.defaultdict(list)
    for _ in range(rounds):
        res["before"].append(nnzip(before, runs, cpu))
        res["after"].append(nnzip(after, runs, cpu))
        res["ort"].append(onnxruntime(runs, cpu))
    med = {k: [statistics.median(r[b] for r in v) for b in range(16)] for k, v in res.items()}
    print("%-6s %9s %9s %9s %8s %8s %9s" % ("layer", "before", "after", "ORT", "aft/bef", "aft/ORT", "paired"))
    for b in range(16):
        paired = statistics.median(a[b] / o[b] for a, o in zip(res["after"], res["ort"]))
        print("b%-5d %9.1f %9.1f %9.1f %8.2f %8.2f %9.2f" % (
            b, med["before"][b], med["after"][b], med["ort"][b],
            med["after"][b] / med["before"][b], med["after"][b] / med["ort"][b], paired))
    tot = {k: sum(v) for k, v in med.items()}
    print("%-6s %9.1f %9.1f %9.1f %8.2f %8.2f" % (
        "all", tot["before"], tot["after"], tot["ort"], tot["after"] / tot["before"], tot["after"] / tot["ort"]))


if __name__ == "__main__":
    main()
