"""ONNX -> TensorRT engine (`model.plan`) with one optimization profile per sequence bucket.

The preprocess pads every request to one of a few sequence lengths (the buckets), so the engine gets a
profile per bucket with that exact length: TensorRT tunes kernels for each shape the server will see,
and Triton's tensorrt_plan backend picks, per batch, the profile whose shapes fit it.

Built with the `tensorrt` Python API, which must be the TensorRT release of the Triton image that loads
the plan (an engine is tied to TensorRT version and GPU model). Where `tensorrt` is missing, the
error names the container that has a matching one: `docker compose --profile export run export`
(NGC PyTorch 25.07: the TensorRT of Triton 25.07, the image that serves it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from export.errors import ExportError

MATCHING_CONTAINER = ("docker compose --profile export run --rm export --runtime tensorrt ... "
                      "(image nvcr.io/nvidia/pytorch:25.07-py3, whose TensorRT is the one in tritonserver:25.07)")
# Layers that accumulate over many values in FP16 and may overflow or lose precision there; kept in
# FP32 when the FP16 engine fails validation (TensorRT layer type names).
FP32_SENSITIVE_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX", "REDUCE", "UNARY")


@dataclasses.dataclass(frozen=True)
class SequenceProfile:
    """One optimization profile: batch min/opt/max at one exact sequence length."""

    sequence: int
    min_batch: int
    opt_batch: int
    max_batch: int

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return (self.min_batch, self.sequence), (self.opt_batch, self.sequence), (self.max_batch, self.sequence)

    def __str__(self) -> str:
        return f"seq {self.sequence}: batch {self.min_batch}/{self.opt_batch}/{self.max_batch} (min/opt/max)"


def sequence_profiles(buckets: tuple[int, ...], max_batch: int, opt_batch: int) -> list[SequenceProfile]:
    if max_batch < 1 or not 1 <= opt_batch <= max_batch:
        raise ExportError(f"TensorRT profiles need 1 <= opt batch ({opt_batch}) <= max batch ({max_batch})")
    return [SequenceProfile(seq, 1, opt_batch, max_batch) for seq in buckets]


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise ExportError(f"the tensorrt runtime needs TensorRT's Python package, which is not installed here; "
                          f"build in the matching container: {MATCHING_CONTAINER}") from None
    return tensorrt


@dataclasses.dataclass
class BuildReport:
    profiles: list[SequenceProfile]
    fp16: bool
    fp32_layers: int
    plan_bytes: int

    def __str__(self) -> str:
        precision = "FP16" if self.fp16 else "FP32"
        kept = f", {self.fp32_layers} accumulation layers kept in FP32" if self.fp32_layers else ""
        return f"{precision} engine, {len(self.profiles)} profiles{kept}, {self.plan_bytes / 1e6:.1f} MB"


def build_engine(onnx_path: Path, plan_path: Path, profiles: list[SequenceProfile], fp16: bool = True,
                 fp32_sensitive_layers: bool = False, workspace_gib: float = 4.0, trt=None) -> BuildReport:
    """Parse the ONNX, add the profiles, build and write the serialized engine."""
    trt = trt or import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path.name}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    kept = 0
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if fp16 and fp32_sensitive_layers:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        sensitive = {getattr(trt.LayerType, name) for name in FP32_SENSITIVE_LAYER_TYPES}
        for index in range(network.num_layers):
            layer = network.get_layer(index)
            if layer.type in sensitive:
                layer.precision = trt.float32
                for output in range(layer.num_outputs):
                    layer.set_output_type(output, trt.float32)
                kept += 1
    for spec in profiles:
        profile = builder.create_optimization_profile()
        for index in range(network.num_inputs):  # the graph's own inputs: no token_type_ids for RoBERTa
            profile.set_shape(network.get_input(index).name, *spec.shapes())
        config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT failed to build the engine (see its log above)")
    plan_path.write_bytes(bytes(serialized))
    return BuildReport(profiles, fp16, kept, plan_path.stat().st_size)


def engine_runner(plan_path: Path, profiles: list[SequenceProfile], output_name: str, trt=None):
    """For export.validate: the engine run as Triton runs it (profile chosen by the batch's sequence
    length). Needs a CUDA GPU and torch with CUDA, as the build itself does."""
    import numpy as np
    import torch

    trt = trt or import_tensorrt()
    if not torch.cuda.is_available():
        raise ExportError("validating a TensorRT engine needs a CUDA GPU visible to torch")
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_path.read_bytes())
    context = engine.create_execution_context()
    stream = torch.cuda.current_stream()
    by_sequence = {profile.sequence: index for index, profile in enumerate(profiles)}

    def run(feeds: dict) -> np.ndarray:
        sequence = feeds["input_ids"].shape[1]
        context.set_optimization_profile_async(by_sequence[sequence], stream.cuda_stream)
        inputs = {name: torch.from_numpy(feeds[name]).cuda() for name in feeds}
        for name, tensor in inputs.items():
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        output = torch.empty(tuple(context.get_tensor_shape(output_name)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(output_name, output.data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError("TensorRT failed to run the engine on a validation batch")
        stream.synchronize()
        return output.cpu().numpy()

    return run
