//! ONNX graph surgery (stub).
