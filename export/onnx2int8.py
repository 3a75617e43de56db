"""FP32 ONNX -> INT8 ONNX for the CPU runtimes: dynamic quantization of the encoder's weight matrices.

What is quantized, and why:
- every MatMul whose second input is a weight (query/key/value, attention output, feed-forward in and
  out): INT8 weights, one scale per output channel (per-channel: on all-MiniLM-L6-v2 it halves the mean
  score error of one scale per matrix, 0.021 -> 0.009 on English requests, and only it passes the gate,
  see export/agreement.py); activations are quantized to UINT8 at run time, one scale per tensor
  (ONNX Runtime's DynamicQuantizeLinear);
- kept in FP32: the embeddings (Gather), LayerNorm, softmax, GELU, the attention products of two
  activations (no weight to quantize), the pooler and the classifier head (Gemm: one row per pair,
  a negligible share of the compute, and the layer the scores come from), and the mean pooling of
  embedding models.
The accuracy of the result is measured by export/agreement.py against the FP32 model, not assumed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
from pathlib import Path

QUANTIZED_OPS = ("MatMul",)
# ops that compute with INT8 weights after quantize_dynamic
INT8_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}


@dataclasses.dataclass(frozen=True)
class QuantizationSummary:
    int8_matmuls: int
    fp32_head: tuple[str, ...]  # the pooler's and classifier's layers, where the model has them
    fp32_matmuls: int  # all MatMuls left in FP32: products of two activations (attention), and the head
    fp32_mb: float
    int8_mb: float

    def __str__(self) -> str:
        head = f"the head ({', '.join(self.fp32_head)})" if self.fp32_head else "no head (embedding model)"
        return (f"{self.int8_matmuls} weight MatMuls in INT8 (per-channel); kept in FP32: "
                f"{self.fp32_matmuls - len(self.fp32_head)} activation products (attention), {head}; "
                f"{self.fp32_mb:.1f} MB -> {self.int8_mb:.1f} MB")


@contextlib.contextmanager
def _quiet_root_logger():
    """quantize_dynamic logs a generic 'consider pre-processing' warning through the root logger; the
    export prints its own summary instead."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_encoder(fp32_path: Path, int8_path: Path) -> QuantizationSummary:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The head's dense layers are Gemm nodes in the export; quantize_dynamic first rewrites every Gemm as
    # MatMul (named <gemm>_MatMul) + Add, and would then quantize them: they are excluded by that name.
    head = [node.name for node in onnx.load(str(fp32_path), load_external_data=False).graph.node
            if node.op_type == "Gemm"]
    with _quiet_root_logger():
        quantize_dynamic(
            fp32_path, int8_path, op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
            weight_type=QuantType.QInt8, nodes_to_exclude=[f"{name}_MatMul" for name in head],
            extra_options={"MatMulConstBOnly": True},
        )
    ops = collections.Counter(node.op_type for node in onnx.load(str(int8_path), load_external_data=False).graph.node)
    return QuantizationSummary(
        int8_matmuls=sum(ops[op] for op in INT8_OPS), fp32_head=tuple(head), fp32_matmuls=ops["MatMul"],
        fp32_mb=fp32_path.stat().st_size / 1e6, int8_mb=int8_path.stat().st_size / 1e6,
    )
