"""PyTorch encoder -> ONNX with named tensors and dynamic batch/sequence axes."""

from __future__ import annotations

import enum
import warnings
from pathlib import Path

import torch

from zsc_server.settings import ENCODER_INPUTS

OPSET = 17


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # CPU runtimes only: FP32 export, then export/onnx2int8.py
    FP8 = "fp8"  # python-torch only: FP32 weights saved, FP8 encoder layers at load (zsc_server/torch_fp8.py)


def export_onnx(module: torch.nn.Module, output_name: str, path: Path, precision: Precision) -> Path:
    """Trace ``module(*inputs)`` to ``path``, the inputs named by ``module.input_names`` (BERT's three by
    default; RoBERTa, XLM-R, BART, DeBERTa-v3 and ModernBERT take no token_type_ids).

    FP16 converts the weights and activations after export but keeps int64 inputs
    and an FP32 output (``keep_io_types``), so the rest of the ensemble is unchanged.
    INT8 writes the FP32 graph: export/onnx2int8.py quantizes it once it is validated. FP8 is python-torch's
    alone (zsc_server/torch_fp8.py): refused.
    """
    if precision is Precision.FP8:
        raise ValueError("FP8 is the python-torch runtime's: an ONNX export is fp32, fp16 or (quantized after) int8")
    path.parent.mkdir(parents=True, exist_ok=True)
    names = tuple(getattr(module, "input_names", ENCODER_INPUTS))
    sample = _sample_inputs(module, names)
    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in names}
    axes[output_name] = {0: "batch_size"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about python control flow in HF code
        torch.onnx.export(
            module,
            sample,
            str(path),
            input_names=list(names),
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    if precision is Precision.FP16:
        _convert_to_fp16(path)
    return path


def _sample_inputs(module: torch.nn.Module, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    """Two rows of 16 tokens to trace with. BART's classifier reads the state at </s>, so the rows end
    with it, as every encoded pair does."""
    ids = torch.ones((2, 16), dtype=torch.int64)
    config = getattr(getattr(module, "model", None), "config", None)
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int):
        ids[:, -1] = eos
    feeds = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    return tuple(feeds[name] for name in names)


def _convert_to_fp16(path: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(model, str(path))
