"""Export targets: one module per target (ONNX Runtime, OpenVINO, TensorRT)."""
