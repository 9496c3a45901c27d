#!/usr/bin/env python3
"""EfficientNet-Lite0's layers, batch 1, one thread, pinned to one core: nnzip before and after
a change (two `op_profile` binaries) beside onnxruntime's own profiler.

    target/bench/venv/bin/python tools/benches/layers_vs_ort.py BEFORE_OP_PROFILE \
        AFTER_OP_PROFILE [ROUNDS=25] [RUNS=3] [CPU=0] [LAYERS=all|depthwise|pointwise]

Each round runs the three in turn (before, after, onnxruntime; a fresh process each, RUNS
timed runs), so that a change in the machine's load falls on all three; the table gives the
median over the rounds of each layer's µs per run, the ratios of the medians, and the median
of the paired per-round ratio after / onnxruntime, then the sums by kind of layer. Layers: the
stem (its convolution and ReLU6), each block's expansion, depthwise and projection, the head,
the classifier. onnxruntime's layer is its Conv fused with the Clip after it where one follows
(its node is named after the Clip); its profiler adds about 15 µs per node, nnzip's
`op_profile` about 1 (in nnzip the stem's ReLU6 is a node of its own where the stem kernel does
not take it in: both count). Run it from the repository root in the venv of
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
opts.enable_profiling = True; opts.profile_file_prefix = "/tmp/layers_vs_ort"
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


def layers():
    """(label, kind, nnzip nodes, onnxruntime node) for each layer, in model order."""
    out = [("stem", "stem", ["/_conv_stem/Conv", "/_swish/Clip.max"], "/_swish/Clip")]
    for b in range(16):
        depthwise_clip = "_swish_1" if b > 0 else "_swish"
        if b > 0:
            out.append((f"b{b} expand", "expand", [f"/_blocks.{b}/_expand_conv/Conv"],
                        f"/_blocks.{b}/_swish/Clip"))
        out.append((f"b{b} dw", "depthwise", [f"/_blocks.{b}/_depthwise_conv/Conv"],
                    f"/_blocks.{b}/{depthwise_clip}/Clip"))
        out.append((f"b{b} project", "project", [f"/_blocks.{b}/_project_conv/Conv"],
                    f"/_blocks.{b}/_project_conv/Conv"))
    out.append(("head", "head", ["/_conv_head/Conv"], "/_swish_1/Clip"))
    out.append(("fc", "fc", ["/_fc/Gemm"], "/_fc/Gemm"))
    return out


def nnzip(binary, runs, cpu, chosen):
    env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    out = subprocess.run(["taskset", "-c", cpu, binary, MODEL, runs, "400"],
                         capture_output=True, text=True, env=env, check=True).stdout
    t = {}
    for line in out.splitlines():
        m = re.match(r"\s*([0-9.]+) µs\s+\S+\s+(\S+)", line)
        if m:
            # tract-onnx's reader names a 1x1 convolution's product `NAME.einsum`.
            t[m.group(2).removesuffix(".einsum")] = float(m.group(1))
    return [sum(t.get(n, 0.0) for n in names) for _, _, names, _ in chosen]


def onnxruntime(runs, cpu, chosen):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(["taskset", "-c", cpu, sys.executable, "-c", ORT_PROFILE, MODEL, runs],
                         capture_output=True, text=True, env=env, check=True).stdout
    t = {}
    for line in out.splitlines():
        us, name = line.split(" ", 1)
        t[name] = float(us)

    def node(name):
        return next(v for k, v in t.items() if k == name or k.startswith(name + "_output"))

    return [node(ort_name) for _, _, _, ort_name in chosen]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    runs = sys.argv[4] if len(sys.argv) > 4 else "3"
    cpu = sys.argv[5] if len(sys.argv) > 5 else "0"
    which = sys.argv[6] if len(sys.argv) > 6 else "all"
    kinds = {"all": None, "depthwise": {"depthwise"}, "pointwise": {"expand", "project", "head"}}
    if which not in kinds:
        sys.exit(f"LAYERS must be one of {', '.join(kinds)}, not {which}")
    chosen = [l for l in layers() if kinds[which] is None or l[1] in kinds[which]]
    res = collections.defaultdict(list)
    for _ in range(rounds):
        res["before"].append(nnzip(before, runs, cpu, chosen))
        res["after"].append(nnzip(after, runs, cpu, chosen))
        res["ort"].append(onnxruntime(runs, cpu, chosen))
    n = len(chosen)
    med = {k: [statistics.median(r[i] for r in v) for i in range(n)] for k, v in res.items()}
    print("%-11s %9s %9s %9s %8s %8s %9s" % ("layer", "before", "after", "ORT", "aft/bef", "aft/ORT", "paired"))
    for i, (label, _, _, _) in enumerate(chosen):
        paired = statistics.median(a[i] / o[i] for a, o in zip(res["after"], res["ort"]))
        print("%-11s %9.1f %9.1f %9.1f %8.2f %8.2f %9.2f" % (
            label, med["before"][i], med["after"][i], med["ort"][i],
            med["after"][i] / med["before"][i], med["after"][i] / med["ort"][i], paired))
    for kind in dict.fromkeys(l[1] for l in chosen):
        idx = [i for i, l in enumerate(chosen) if l[1] == kind]
        tot = {k: sum(v[i] for i in idx) for k, v in med.items()}
        print("%-11s %9.1f %9.1f %9.1f %8.2f %8.2f" % (
            "all " + kind, tot["before"], tot["after"], tot["ort"],
            tot["after"] / tot["before"], tot["after"] / tot["ort"]))
    tot = {k: sum(v) for k, v in med.items()}
    print("%-11s %9.1f %9.1f %9.1f %8.2f %8.2f" % (
        "all", tot["before"], tot["after"], tot["ort"], tot["after"] / tot["before"], tot["after"] / tot["ort"]))


if __name__ == "__main__":
    main()
