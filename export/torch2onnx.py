"""PyTorch encoder -> ONNX with named tensors and dynamic batch/sequence axes."""

from __future__ import annotations

import enum
import warnings
from pathlib import Path

import torch

from zsc_server.tokenization import ENCODER_INPUTS

OPSET = 17


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # CPU runtimes only: FP32 export, then export/onnx2int8.py


def export_onnx(module: torch.nn.Module, output_name: str, path: Path, precision: Precision) -> Path:
    """Trace ``module(input_ids, attention_mask, token_type_ids)`` to ``path``.

    FP16 converts the weights and activations after export but keeps int64 inputs
    and an FP32 output (``keep_io_types``), so the rest of the ensemble is unchanged.
    INT8 writes the FP32 graph: export/onnx2int8.py quantizes it once it is validated.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.ones((2, 16), dtype=torch.int64)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in ENCODER_INPUTS}
    axes[output_name] = {0: "batch_size"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow in HF code
        torch.onnx.export(
            module,
            (sample, sample, torch.zeros_like(sample)),
            str(path),
            input_names=list(ENCODER_INPUTS),
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    if precision is Precision.FP16:
        _convert_to_fp16(path)
    return path


def _convert_to_fp16(path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))
