"""The methods of tools/benches/anchors.py. Each turns the dense ONNX model into (stored bytes,
ONNX bytes that onnxruntime runs); `run` gives the logits of a model on views."""
import copy
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import anchors_views


def run(model_bytes, x):
    """Logits of every view, batch 1 (EfficientNet-Lite0's input has a fixed batch of 1)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    s = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def float_tensors(model):
    """The float initializers with at least one dimension (the 0-d ones are constants of the
    graph, not weights)."""
    return [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) > 0]


def weight_axes(model):
    """Output-channel axis of each convolution and fully connected weight."""
    axes = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1:
            axes[node.input[1]] = 0
        elif node.op_type == "Gemm":
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            axes[node.input[1]] = 0 if trans_b else 1
    return axes


def replace_initializers(model, stored, decode_nodes):
    """A copy of `model` whose initializers named in `stored` are replaced by the tensors of
    `stored` (each a list of new initializers) and the nodes that rebuild them at load."""
    m = copy.deepcopy(model)
    kept = [i for i in m.graph.initializer if i.name not in stored]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    for tensors in stored.values():
        m.graph.initializer.extend(tensors)
    nodes = list(decode_nodes) + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m.SerializeToString()


def binary16(model):
    stored, nodes = {}, []
    for t in float_tensors(model):
        a = numpy_helper.to_array(t)
        stored[t.name] = [numpy_helper.from_array(a.astype(np.float16), t.name + "__f16")]
        nodes.append(helper.make_node("Cast", [t.name + "__f16"], [t.name], to=TensorProto.FLOAT))
    b = replace_initializers(model, stored, nodes)
    return len(b), b


def int8_rtn(model):
    stored, nodes = {}, []
    inits = {i.name: i for i in model.graph.initializer}
    for name, axis in weight_axes(model).items():
        w = numpy_helper.to_array(inits[name])
        others = tuple(d for d in range(w.ndim) if d != axis)
        scale = np.abs(w).max(axis=others) / 127
        scale = np.where(scale > 0, scale, 1).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        stored[name] = [numpy_helper.from_array(q, name + "__q"),
                        numpy_helper.from_array(scale, name + "__scale")]
        nodes.append(helper.make_node("DequantizeLinear", [name + "__q", name + "__scale"], [name],
                                      axis=axis))
    b = replace_initializers(model, stored, nodes)
    return len(b), b


class _CalibrationViews:
    """onnxruntime's CalibrationDataReader over the views of the calibration photos."""

    def __init__(self, x, input_name):
        self.x, self.name, self.i = x, input_name, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {self.name: self.x[self.i - 1:self.i]}

    def rewind(self):
        self.i = 0


def ort_qdq(model_path, calibration_dir, per_photo, work):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_CalibrationViews, CalibrationDataReader):
        pass

    x, _ = anchors_views.photo_views(calibration_dir, per_photo)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "qdq.onnx"
        quant_pre_process(model_path, str(pre))
        name = onnx.load(str(pre)).graph.input[0].name
        # Bounded memory: min/max are folded in every 32 views instead of keeping every
        # intermediate output of every view.
        quantize_static(str(pre), str(out), Reader(x, name), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8,
                        extra_options={"CalibMaxIntermediateOutputs": 32})
        b = out.read_bytes()
    return len(b), b


def quiet_rows_rms(a):
    """RMS of the quietest tenth of a weight's output channels (10th percentile of the rows' RMS).
    Folded BatchNorm scales rows by orders of magnitude (EfficientNet-Lite0's stem: a tenth of
    the rows below 0.006 of the tensor's std), and NNCodec has one step per tensor: a step set
    from this keeps those rows."""
    rows = np.sqrt((a.reshape(a.shape[0], -1).astype(np.float64) ** 2).mean(1))
    return float(np.percentile(rows, 10))


def row_rms(a):
    """RMS of each output channel (row) of a weight, broadcastable against it; 1 for zero rows."""
    rms = np.sqrt((a.reshape(a.shape[0], -1).astype(np.float64) ** 2).mean(1))
    return np.where(rms > 0, rms, 1).astype(np.float32).reshape((-1,) + (1,) * (a.ndim - 1))


def nncodec_row_scaled(model, qp):
    """NNCodec on weights whose rows are first divided by their RMS (each row's scale then coded
    by NNCodec as a tensor of its own, at its fine non-weight QP): one QP then fits every row,
    as NNCodec's trained local scaling (LSA) would, without training."""
    from nncodec import nnc

    tensors, scales = {}, {}
    for t in float_tensors(model):
        a = numpy_helper.to_array(t).astype(np.float32)
        if a.ndim > 1:
            scales[t.name] = row_rms(a)
            tensors[t.name] = a / scales[t.name]
            tensors[t.name + "__row_rms"] = scales[t.name].ravel()
        else:
            tensors[t.name] = a
    bitstream = nnc.compress(tensors, bitstream_path=None, qp=qp, use_dq=True, param_opt=True,
                             row_skipping=True, return_bitstream=True, verbose=False)
    decoded = nnc.decompress(bytearray(bitstream))
    stored = {}
    for n, a in tensors.items():
        if n.endswith("__row_rms"):
            continue
        w = np.asarray(decoded[n], np.float32).reshape(a.shape)
        if n in scales:
            w = w * np.asarray(decoded[n + "__row_rms"], np.float32).reshape(scales[n].shape)
        stored[n] = [numpy_helper.from_array(w, n)]
    graph_only = replace_initializers(model, {n: [] for n in stored}, [])
    return len(bitstream) + len(graph_only), replace_initializers(model, stored, [])


def nncodec(model, qp=-32, opt_qp=False, step_of_std=None, step_of_quiet_rows=None):
    """NNCodec on every float tensor. Per-tensor QPs (`qp_per_tensor`) when a step is given:
    each weight tensor's step that fraction of its standard deviation (`step_of_std`) or of the
    RMS of its quietest rows (`step_of_quiet_rows`); else one `qp` for every weight tensor,
    adapted per tensor by NNCodec itself with `opt_qp`. Non-weight tensors (biases) keep
    NNCodec's default fine QP for them."""
    from nncodec import nnc
    from nncodec.nnc_core.common import get_qp_from_stepsize

    tensors = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in float_tensors(model)}
    per_tensor = None
    if step_of_std is not None or step_of_quiet_rows is not None:
        qp_density = 2  # nnc.compress's default

        def step(a):
            return step_of_std * float(a.std()) if step_of_std is not None else step_of_quiet_rows * quiet_rows_rms(a)
        per_tensor = {n: np.int32(round(get_qp_from_stepsize(step(a), qp_density)))
                      for n, a in tensors.items() if a.ndim > 1}
    bitstream = nnc.compress(tensors, bitstream_path=None, qp=qp, opt_qp=opt_qp,
                             qp_per_tensor=per_tensor, use_dq=True, param_opt=True,
                             row_skipping=True, return_bitstream=True, verbose=False)
    decoded = nnc.decompress(bytearray(bitstream))
    stored = {n: [numpy_helper.from_array(np.asarray(decoded[n], np.float32).reshape(a.shape), n)]
              for n, a in tensors.items()}
    graph_only = replace_initializers(model, {n: [] for n in tensors}, [])
    return len(bitstream) + len(graph_only), replace_initializers(model, stored, [])
