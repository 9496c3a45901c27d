#!/usr/bin/env python3
"""The Python side of tools/benches/architectures.sh (needs onnx, onnxruntime, numpy, pillow).

    architectures.py photos SRC_DIR OUT_DIR
        each photo resized (PIL, bilinear) so that its short side is 256 and saved as PNG: the
        `imagenet` preprocessing then only crops it, so nnzip and onnxruntime see the same pixels
    architectures.py make NAME OUT.onnx SEED PNG...
        the `light/` model NAME of the onnx wheel's backend test data with every ConstantOfShape
        weight replaced by seeded random values (He-initialised convolutions and fully connected
        layers, batch normalisations near the identity), the final linear layer scaled so that
        the logits have a standard deviation of 3 on the photos (a random network otherwise
        gives a one-hot softmax)
    architectures.py ort MODEL.onnx PNG...
        one JSON line per photo: onnxruntime's top 5 (index, probability: the output itself when
        the graph ends in Softmax, its softmax otherwise)
    architectures.py compare DENSE.json OTHER.json
        top-1 and top-5 agreement of two files of JSON lines (`nnzip classify --json` or `ort`)
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
LOGIT_STD = 3.0


def light_model(name):
    folder = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    return onnx.load(os.path.join(folder, f"light_{name}.onnx"))


def photos(src, out):
    from PIL import Image

    os.makedirs(out, exist_ok=True)
    for f in sorted(os.listdir(src)):
        if not f.lower().endswith((".jpg", ".jpeg", ".png")):
            continue
        img = Image.open(os.path.join(src, f)).convert("RGB")
        w, h = img.size
        s = 256 / min(w, h)
        size = (256, round(h * s)) if w <= h else (round(w * s), 256)
        img.resize(size, Image.BILINEAR).save(os.path.join(out, os.path.splitext(f)[0] + ".png"))


def input_tensor(png):
    """What nnzip's `imagenet` recipe makes of a PNG whose short side is 256: the centre 224
    crop, `(pixel / 255 - mean) / std` in float32, NCHW."""
    from PIL import Image

    a = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)
    h, w, _ = a.shape
    y0, x0 = (h - 224) // 2, (w - 224) // 2
    a = a[y0:y0 + 224, x0:x0 + 224]
    a = (a * np.float32(1.0 / 255.0) - MEAN) / STD
    return a.transpose(2, 0, 1)[None].astype(np.float32)


def consumers(graph):
    uses = {}
    for n in graph.node:
        for slot, name in enumerate(n.input):
            uses.setdefault(name, []).append((n, slot))
    return uses


def random_weight(name, shape, uses, rng):
    """Values for one weight, by what reads it."""
    users = uses.get(name, [])
    n, slot = users[0] if users else (None, None)
    if n is not None and n.op_type == "Unsqueeze":
        # Caffe2's scale/bias pairs: Unsqueeze then Mul (scale) or Add (shift).
        follow = uses.get(n.output[0], [])
        kind = follow[0][0].op_type if follow else ""
        if kind == "Mul":
            return rng.uniform(0.8, 1.2, shape)
        return rng.uniform(-0.1, 0.1, shape)
    op = n.op_type if n is not None else ""
    if op == "Conv" and slot == 1:
        fan_in = int(np.prod(shape[1:]))
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if op == "Gemm" and slot == 1:
        trans_b = any(a.name == "transB" and a.i for a in n.attribute)
        fan_in = shape[1] if trans_b else shape[0]
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if op == "BatchNormalization":
        return {
            1: lambda: rng.uniform(0.8, 1.2, shape),
            2: lambda: rng.uniform(-0.1, 0.1, shape),
            3: lambda: rng.uniform(-0.1, 0.1, shape),
            4: lambda: rng.uniform(0.8, 1.2, shape),
        }[slot]()
    return rng.uniform(-0.05, 0.05, shape)


def seeded(model, seed):
    """The model with its ConstantOfShape weights as seeded random initializers, in IR 4 form
    (initializers not listed as graph inputs)."""
    rng = np.random.default_rng(seed)
    g = model.graph
    shapes = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    uses = consumers(g)
    weights, nodes = [], []
    for n in g.node:
        if n.op_type == "ConstantOfShape":
            shape = [int(d) for d in shapes[n.input[0]]]
            value = random_weight(n.output[0], shape, uses, rng).astype(np.float32)
            weights.append(numpy_helper.from_array(value, n.output[0]))
        else:
            nodes.append(n)
    read = {i for n in nodes for i in n.input}
    kept = [t for t in g.initializer if t.name in read] + weights
    init_names = {t.name for t in kept}
    inputs = [i for i in g.input if i.name not in init_names and i.name in read]
    graph = helper.make_graph(nodes, g.name, inputs, list(g.output), kept)
    out = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="nnzip-bench")
    out.ir_version = 4
    return out


def final_linear(graph):
    """The last Conv or Gemm node and the name of the value its output leads to before Softmax
    (the logits), or the graph output when there is no Softmax."""
    linear = [n for n in graph.node if n.op_type in ("Conv", "Gemm")][-1]
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    logits = softmax[-1].input[0] if softmax else graph.output[0].name
    return linear, logits


def calibrate(model, pngs):
    """Scales the final linear layer (weight and bias) so that the logits have LOGIT_STD: every
    node between it and the softmax (ReLU, pooling, reshapes) is positively homogeneous."""
    import onnxruntime as ort

    linear, logits = final_linear(model.graph)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    if logits not in {o.name for o in probe.graph.output}:
        probe.graph.output.append(helper.make_empty_tensor_value_info(logits))
    s = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    values = [s.run([logits], {name: input_tensor(p)})[0] for p in pngs]
    scale = LOGIT_STD / float(np.std(np.concatenate([v.ravel() for v in values])))
    for t in model.graph.initializer:
        if t.name in linear.input[1:]:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(scale), t.name))
    return scale


def make(name, out, seed, pngs):
    model = seeded(light_model(name), seed)
    scale = calibrate(model, pngs)
    onnx.save(model, out)
    print(f"{name}: final layer scaled by {scale:.4g}", file=sys.stderr)


def top5(values):
    v = values.ravel()
    order = sorted(range(v.size), key=lambda i: (-v[i], i))[:5]
    return [{"index": i, "probability": float(v[i])} for i in order]


def ends_in_softmax(graph):
    producer = {o: n for n in graph.node for o in n.output}
    n = producer.get(graph.output[0].name)
    while n is not None and n.op_type in ("Reshape", "Flatten", "Identity", "Squeeze", "Unsqueeze"):
        n = producer.get(n.input[0])
    return n is not None and n.op_type == "Softmax"


def run_ort(model, pngs):
    """onnxruntime's probabilities: the output itself after a final Softmax, else its softmax."""
    import onnxruntime as ort

    probabilities = ends_in_softmax(onnx.load(model, load_external_data=False).graph)
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    for p in pngs:
        out = s.run(None, {name: input_tensor(p)})[0].ravel().astype(np.float64)
        if not probabilities:
            e = np.exp(out - out.max())
            out = e / e.sum()
        print(json.dumps({"image": p, "top": top5(out)}))


def compare(a_path, b_path):
    """Prints `top1_equal top5_equal top5_overlap images max_prob_diff`: the same top-1, the same
    five classes in the same order, the classes in common (mean of 0–5), and the largest
    difference of a probability both give."""
    a = [json.loads(l) for l in open(a_path) if l.strip()]
    b = [json.loads(l) for l in open(b_path) if l.strip()]
    assert len(a) == len(b), f"{a_path} has {len(a)} images, {b_path} {len(b)}"
    top1 = top5 = overlap = 0
    diff = 0.0
    for x, y in zip(a, b):
        xi = [p["index"] for p in x["top"][:5]]
        yi = [p["index"] for p in y["top"][:5]]
        top1 += xi[0] == yi[0]
        top5 += xi == yi
        overlap += len(set(xi) & set(yi))
        yp = {p["index"]: p["probability"] for p in y["top"]}
        for p in x["top"]:
            if p["index"] in yp:
                diff = max(diff, abs(p["probability"] - yp[p["index"]]))
    print(top1, top5, f"{overlap / len(a):.2f}", len(a), f"{diff:.2g}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "photos":
        photos(*args)
    elif cmd == "make":
        make(args[0], args[1], int(args[2]), args[3:])
    elif cmd == "ort":
        run_ort(args[0], args[1:])
    elif cmd == "compare":
        compare(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
