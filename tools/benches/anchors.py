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
  the coded initializers left out). Five settings: one QP for every weight tensor; its own
  per-tensor adaptation (`opt_qp`); per-tensor QPs (`qp_per_tensor`) set here so that each
  tensor's step is a fraction of its standard deviation, or of the RMS of its quietest tenth of
  rows (folded BatchNorm makes some rows far smaller than the tensor's std); and one QP on
  weights whose rows are divided by their RMS first, the row scales coded by NNCodec too (what
  its trained local scaling adaptation, LSA, would add, without the training).
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
    p.add_argument("--nnzip", action="append", default=[],
                   metavar="ftEPOCHS[-mixed][-vVIEWS]:RATIO=FILE.nnz=FILE.onnx",
                   help="an nnzip file, its fine-tuning epochs and target ratio, and its decompressed ONNX (repeat)")
    p.add_argument("--views", type=int, default=10, help="views per photo")
    p.add_argument("--work", required=True, help="cache folder")
    p.add_argument("--json", help="write every row here")
    p.add_argument("--plot", help="write the KL-against-size PNG here")
    p.add_argument("--nncodec-qps", default="-42,-38,-34,-30,-26,-22",
                   help="NNCodec QPs, one for every weight tensor")
    p.add_argument("--nncodec-opt-qps", default="-46,-42,-38,-34,-30,-26",
                   help="NNCodec QPs that opt_qp adapts per tensor")
    p.add_argument("--nncodec-steps", default="0.05,0.1,0.15,0.2,0.3",
                   help="NNCodec per-tensor steps, as fractions of each tensor's std")
    p.add_argument("--nncodec-row-scaled-qps", default="-20,-16,-12,-8,-4",
                   help="NNCodec QPs on weights whose rows are scaled to RMS 1 first")
    p.add_argument("--nncodec-row-steps", default="0.05,0.1,0.2,0.3,0.4",
                   help="NNCodec per-tensor steps, as fractions of the RMS of each tensor's quietest rows")
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


def calibration_words(suffix):
    """What a file-name suffix of anchors.sh says about nnzip's calibration."""
    if suffix.startswith("v") and suffix[1:].isdigit():
        return f"{suffix[1:]} views per photo"
    return f"{suffix} calibration"


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
    for qp in (int(q) for q in args.nncodec_opt_qps.split(",")):
        rows.append(bench.row(f"NNCodec qp {qp} opt_qp", "NNCodec, opt_qp",
                              lambda: methods.nncodec(m, qp=qp, opt_qp=True)))
    for step in (float(s) for s in args.nncodec_steps.split(",")):
        rows.append(bench.row(f"NNCodec step {step} std", "NNCodec, per-tensor QPs (std)",
                              lambda: methods.nncodec(m, step_of_std=step)))
    for spec in args.nnzip:
        label, nnz, decompressed = spec.split("=", 2)
        fine_tune, ratio = label.split(":", 1)
        # ftEPOCHS, then -mixed for the mixed calibration and -vN for N views (anchors.sh).
        epochs, *calibration = fine_tune.removeprefix("ft").split("-")
        method = "nnzip, no fine-tuning" if epochs == "0" else f"nnzip, fine-tuned {epochs} epochs"
        method += "".join(", " + calibration_words(w) for w in calibration)
        rows.append(bench.row(f"nnzip {ratio} {' '.join(['ft' + epochs] + calibration)}", method,
                              lambda: (os.path.getsize(nnz), Path(decompressed).read_bytes()),
                              source=nnz))
    for step in (float(s) for s in args.nncodec_row_steps.split(",")):
        rows.append(bench.row(f"NNCodec step {step} quiet-row RMS", "NNCodec, per-tensor QPs (quiet rows)",
                              lambda: methods.nncodec(m, step_of_quiet_rows=step)))
    for qp in (int(q) for q in args.nncodec_row_scaled_qps.split(",")):
        rows.append(bench.row(f"NNCodec qp {qp} row-scaled", "NNCodec, rows scaled to RMS 1",
                              lambda: methods.nncodec_row_scaled(m, qp)))
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


def plot(rows, sets, onnx_bytes, path):
    import matplotlib
    import matplotlib.ticker
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
        # Issue 25's goal for the 8x file: KL at most 0.015 at 1/8 of the dense ONNX.
        ax.axvline(onnx_bytes / 8 / 1e6, color="grey", ls=":", lw=1)
        ax.axhline(0.015, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("stored size, MB")
        ax.set_title(f"{name} ({rows[0]['sets'][name]['views']} views)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("mean KL(dense ‖ compressed)")
    axes[-1].legend(fontsize=8)
    fig.suptitle("EfficientNet-Lite0: fidelity against file size (lower left is better; dotted: 8x, KL 0.015)")
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
        plot(rows, list(bench.sets), onnx_bytes, args.plot)


if __name__ == "__main__":
    main()
