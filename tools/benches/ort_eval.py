#!/usr/bin/env python3
"""Accuracy of ONNX classifiers on the Fashion-MNIST test set with onnxruntime (PyPI), to check
that `nnzip decompress` gives a dense ONNX scoring exactly what the .nnz scores in the core.

    python3 tools/benches/ort_eval.py MODEL.onnx [MODEL2.onnx ...]

Needs numpy and onnxruntime (target/bench/venv from train_vs_pytorch.sh has them) and Debian's
dataset-fashion-mnist (or NNZIP_FASHION_MNIST_DIR).
"""
import gzip, os, sys
import numpy as np
import onnxruntime as ort

d = os.environ.get("NNZIP_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
def idx(name):
    p = os.path.join(d, name)
    raw = gzip.open(p + ".gz").read() if os.path.exists(p + ".gz") else open(p, "rb").read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
x = idx("t10k-images-idx3-ubyte").astype(np.float32)[:, None] / 255.0
y = idx("t10k-labels-idx1-ubyte")
for path in sys.argv[1:]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    pred = np.concatenate([s.run(None, {name: x[i:i + 1000]})[0].argmax(1) for i in range(0, len(x), 1000)])
    print(f"{path}: onnxruntime {ort.__version__} accuracy {100 * (pred == y).mean():.2f}% on {len(y)} images")
