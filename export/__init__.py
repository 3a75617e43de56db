"""Checkpoint -> ONNX -> Triton model repository (``python -m export --help``)."""
