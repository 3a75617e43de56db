"""ONNX -> OpenVINO IR for the ``python-ov`` runtime: FP32 as exported, or static INT8 by NNCF post-training
quantization.

Static INT8 (nncf.quantize, transformer preset): weights and activations of the encoder's matrix products
(the attention products too) in INT8, with activation scales calibrated once, at export, on pairs the
preprocess makes from realistic requests (the accuracy gate's texts, label sets and templates). Scales fixed
at export make an answer independent of what it is batched with, unlike ONNX Runtime's dynamic
quantization, so INT8 keeps cross-request batching and the label cache. Its accuracy is measured by
export/agreement.py against the FP32 model, not assumed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

CALIBRATION_BATCHES = 64  # NNCF's statistics subset: requests (each a batch of (text, hypothesis) rows)


def to_openvino(onnx_path: Path, xml_path: Path) -> Path:
    """The FP32 ONNX graph as OpenVINO IR (weights kept in FP32: no FP16 compression)."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def quantize_static(fp32_xml: Path, int8_xml: Path, calibration: list[dict[str, np.ndarray]]) -> str:
    """INT8 IR from the FP32 IR, calibrated on `calibration` (the encoder's feeds, one per request)."""
    import nncf
    import openvino as ov

    logging.getLogger("nncf").setLevel(logging.WARNING)
    model = ov.Core().read_model(str(fp32_xml))
    quantized = nncf.quantize(model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=min(len(calibration), CALIBRATION_BATCHES))
    ov.save_model(quantized, str(int8_xml), compress_to_fp16=False)
    fake_quantize = sum(1 for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize")
    return (f"NNCF static INT8 (transformer preset), {fake_quantize} quantized tensors, calibrated on "
            f"{min(len(calibration), CALIBRATION_BATCHES)} requests")

