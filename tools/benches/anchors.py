#!/usr/bin/env python3
"""nnzip's files next to the weight coders people would use instead, on the same photos and the
same fixed views, in one run (issue 25). Driven by tools/benches/anchors.sh, which makes the
venv, the photos and nnzip's files; see there for the command.

Every method gives an ONNX model that onnxruntime runs on the same views, and a stored size:

- binary16: every float initializer stored as binary16 (Cast back to float in the graph).
- int8 weights-only RTN: each convolution / fully connected weight rounded to the nearest of
  255 levels symmetric per output channel (scale = max |w| / 127), biases float32: the file
  stores int8 weights, one float scale per channel and a DequantizeLinear per weight.
- onnxruntime int8 QDQ: `quantize_static` (QDQ format, per-channel int8 weights, MinMax
  calibration on the views of the calibration photos).
- NNCodec (DeepCABAC): every float tensor coded by `nncodec.nnc.compress` (dependent
  quantization and parameter optimisation on, row skipping on), decoded by `nnc.decompress` and
  put back; its size is the bitstream plus the graph without those tensors (an ONNX file with
  the coded initializers left out). Three settings: one QP for every weight tensor; its own
  per-tensor adaptation (`opt_qp`); and per-tensor QPs set here so that each tensor's step is
  the same fraction of its standard deviation.
- nnzip: the `.nnz` files of `nnzip compress --target-ratio R` (size of the file), run as the
  ONNX of `nnzip decompress`.

Metrics against the dense model on each evaluation set: top-1 agreement, the dense class in the
compressed model's top 5, mean KL(dense ‖ compressed) of the softmax outputs, and top-1
agreement on the views where the dense model gives its class ≥ 50% ("sure"; nnzip's
`confident`). Results are cached per row under the work folder (keyed by the views and the input
file), so a re-run computes only what is missing.
"""
import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx

import anchors_views as views_mod
import anchors_methods as methods


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the dense ONNX model")
    p.add_argument("--calibration", required=True, help="calibration photos (onnxruntime's int8)")
    p.add_argument("--eval", action="append", required=True, metavar="NAME=DIR",
                   help="an evaluation set (repeat)")
    p.add_argument("--nnzip", action="append", default=[], metavar="LABEL=FILE.nnz=FILE.onnx",
                   help="an nnzip file and its decompressed ONNX (repeat)")
    p.add_argument("--views", type=int, default=10, help="views per photo")
    p.add_argument("--work", required=True, help="cache folder")
    p.add_argument("--json", help="write every row here")
    p.add_argument("--plot", help="write the KL-against-size PNG here")
    p.add_argument("--nncodec-qps", default="-38,-34,-30,-26,-22",
                   help="NNCodec QPs for one QP everywhere and for opt_qp")
    p.add_argument("--nncodec-steps", default="0.05,0.1,0.15,0.2,0.3",
                   help="NNCodec per-tensor steps, as fractions of each tensor's std")
    return p.parse_args()


def softmax(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def agreement(dense, other):
    """The four fidelity figures of `other`'s logits against `dense`'s, view by view."""
    p, q = softmax(dense), softmax(other)
    top = dense.argmax(1)
    same = top == other.argmax(1)
    top5 = (np.argsort(-other, 1)[:, :5] == top[:, None]).any(1)
    kl = (p * (np.log(np.maximum(p, 1e-300)) - np.log(np.maximum(q, 1e-300)))).sum(1)
    sure = p.max(1) >= 0.5
    return {"views": int(len(top)), "top1": float(same.mean()), "top5": float(top5.mean()),
            "kl": float(kl.mean()), "sure_views": int(sure.sum()),
            "sure_top1": float(same[sure].mean()) if sure.any() else 1.0}


class Bench:
    """The views, the dense logits, and the cached rows of one run."""

    def __init__(self, args):
        self.model_path = args.model
        self.dense_model = onnx.load(args.model)
        self.work = Path(args.work)
        (self.work / "rows").mkdir(parents=True, exist_ok=True)
        self.sets = {}
        for spec in args.eval:
            name, folder = spec.split("=", 1)
            self.sets[name] = views_mod.photo_views(folder, args.views)
        self.calibration = args.calibration
        self.per_photo = args.views
        h = hashlib.sha1()
        for name, (x, files) in sorted(self.sets.items()):
            h.update(name.encode())
            h.update("\n".join(files).encode())
            h.update(x[:, :, ::16, ::16].tobytes())
        self.views_key = h.hexdigest()
        self.dense = {n: methods.run(self.dense_model.SerializeToString(), x)
                      for n, (x, _) in self.sets.items()}

    def row(self, label, method, build, source=None):
        """One row: from the cache when it was measured on these views (and the source file is
        not newer), else `build()` -> (stored bytes, ONNX bytes to run)."""
        cache = self.work / "rows" / (label.replace(" ", "_").replace("/", "_") + ".npz")
        if cache.exists() and (source is None or cache.stat().st_mtime >= os.path.getmtime(source)):
            c = np.load(cache)
            if str(c["views_key"]) == self.views_key:
                return self.finish(label, method, int(c["bytes"]),
                                   {n: c["logits_" + n] for n in self.sets}, float(c["seconds"]))
        t = time.perf_counter()
        stored, runnable = build()
        seconds = time.perf_counter() - t
        logits = {n: methods.run(runnable, x) for n, (x, _) in self.sets.items()}
        np.savez(cache, views_key=self.views_key, bytes=stored, seconds=seconds,
                 **{"logits_" + n: v for n, v in logits.items()})
        return self.finish(label, method, stored, logits, seconds)

    def finish(self, label, method, stored, logits, seconds):
        onnx_bytes = os.path.getsize(self.model_path)
        r = {"label": label, "method": method, "bytes": stored, "ratio": onnx_bytes / stored,
             "build_seconds": seconds,
             "sets": {n: agreement(self.dense[n], logits[n]) for n in self.sets}}
        brief = "  ".join(f"{n}: top-1 {a['top1'] * 100:.1f}% KL {a['kl']:.4f}" for n, a in r["sets"].items())
        print(f"anchors.py: {label}: {stored:,} bytes ({r['ratio']:.2f}x)  {brief}", file=sys.stderr)
        return r


def all_rows(bench, args):
    m = bench.dense_model
    rows = [bench.row("binary16", "binary16", lambda: methods.binary16(m)),
            bench.row("int8 weights-only RTN", "int8 RTN", lambda: methods.int8_rtn(m)),
            bench.row("onnxruntime int8 QDQ", "onnxruntime QDQ",
                      lambda: methods.ort_qdq(bench.model_path, bench.calibration, bench.per_photo,
                                              bench.work))]
    for qp in (int(q) for q in args.nncodec_qps.split(",")):
        rows.append(bench.row(f"NNCodec qp {qp}", "NNCodec, one QP",
                              lambda: methods.nncodec(m, qp=qp)))
    for qp in (int(q) for q in args.nncodec_qps.split(",")):
        rows.append(bench.row(f"NNCodec qp {qp} opt_qp", "NNCodec, opt_qp",
                              lambda: methods.nncodec(m, qp=qp, opt_qp=True)))
    for step in (float(s) for s in args.nncodec_steps.split(",")):
        rows.append(bench.row(f"NNCodec step {step} std", "NNCodec, per-tensor QPs",
                              lambda: methods.nncodec(m, step_of_std=step)))
    for spec in args.nnzip:
        label, nnz, decompressed = spec.split("=", 2)
        rows.append(bench.row(f"nnzip {label}", "nnzip",
                              lambda: (os.path.getsize(nnz), Path(decompressed).read_bytes()),
                              source=nnz))
    return rows


def table(rows, sets, onnx_bytes):
    """The Markdown table of docs/PERFORMANCE.md."""
    head = ["method", "stored bytes", "ratio"]
    for n in sets:
        head += [f"{n}: top-1", "top-5", "KL", "sure top-1"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out.append("| dense ONNX | " + f"{onnx_bytes:,} | 1.00× |" + " — | — | 0 | — |" * len(sets))
    for r in rows:
        cells = [r["label"], f"{r['bytes']:,}", f"{r['ratio']:.2f}×"]
        for n in sets:
            a = r["sets"][n]
            cells += [f"{a['top1'] * 100:.1f}%", f"{a['top5'] * 100:.1f}%", f"{a['kl']:.4f}",
                      f"{a['sure_top1'] * 100:.1f}% of {a['sure_views']}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(rows, sets, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 4.5), sharey=True)
    axes = np.atleast_1d(axes)
    methods_in_order = list(dict.fromkeys(r["method"] for r in rows))
    for ax, name in zip(axes, sets):
        for i, method in enumerate(methods_in_order):
            pts = sorted((r["bytes"] / 1e6, r["sets"][name]["kl"]) for r in rows if r["method"] == method)
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="os^vDP*X"[i % 8], label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("stored size, MB")
        ax.set_title(f"{name} ({rows[0]['sets'][name]['views']} views)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("mean KL(dense ‖ compressed)")
    axes[-1].legend(fontsize=8)
    fig.suptitle("EfficientNet-Lite0: fidelity against file size (lower left is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main():
    args = parse_args()
    bench = Bench(args)
    rows = all_rows(bench, args)
    onnx_bytes = os.path.getsize(args.model)
    for n, (x, files) in bench.sets.items():
        print(f"{n}: {len(files)} photos, {len(x)} views")
    print(table(rows, list(bench.sets), onnx_bytes))
    if args.json:
        Path(args.json).write_text(json.dumps({"onnx_bytes": onnx_bytes, "rows": rows,
                                               "sets": {n: f for n, (_, f) in bench.sets.items()}},
                                              indent=1))
    if args.plot:
        plot(rows, list(bench.sets), args.plot)


if __name__ == "__main__":
    main()
