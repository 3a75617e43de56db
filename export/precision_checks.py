"""Which precision and python-torch layout an export may combine with its runtime and card: refused by name,
before any work where the options alone decide it (`check_requested`), else as soon as the GPU profile has
chosen the precision (`check_chosen`)."""

from __future__ import annotations

from export.errors import ExportError
from export.gpu_profiles import CARDS
from export.options import ExportOptions
from export.repository import Runtime
from export.torch2onnx import Precision
from zsc_server.batching_policy import DEFAULT_TORCH_LAYOUT
from zsc_server.torch_fp8 import FP8_HARDWARE
from zsc_server.torch_packed import check_packed_precision

GATED = (Precision.INT8, Precision.FP8)  # precisions the accuracy gate checks against FP32
CPU_RUNTIMES = (Runtime.PYTHON_ORT, Runtime.PYTHON_OV, Runtime.OPENVINO, Runtime.ONNXRUNTIME)


def check_requested(options: ExportOptions, runtime: Runtime) -> None:
    """What --precision, --runtime, --gpu and --torch-layout rule out by themselves."""
    if options.precision is Precision.INT8 and (runtime not in CPU_RUNTIMES or options.gpu):
        raise ExportError(f"--precision int8 is for the CPU runtimes (python-ort, python-ov, openvino, onnxruntime "
                          f"without --gpu), not {runtime.value}{' with --gpu' if options.gpu else ''}: use fp16 or "
                          "fp32 on the GPU")
    if options.precision is Precision.FP8:
        fp8_cards = ", ".join(name for name, card in CARDS.items() if card.fp8)
        if runtime is not Runtime.PYTHON_TORCH:
            raise ExportError(f"--precision fp8 is python-torch's, not {runtime.value}'s: add --runtime python-torch, "
                              "or use fp16")
        if not options.gpu:
            raise ExportError(f"--precision fp8 is for a GPU with {FP8_HARDWARE}, and this export has no GPU profile "
                              f"(no GPU visible here, or --gpu none): --gpu {fp8_cards} exports for one (with "
                              "--torch-device cpu, a rehearsal that emulates FP8 on this CPU)")
        if not CARDS[options.gpu].fp8:
            raise ExportError(f"--precision fp8 needs {FP8_HARDWARE}, which the {CARDS[options.gpu].name} lacks: use "
                              f"fp16, or one of {fp8_cards}")
    if options.torch_layout != DEFAULT_TORCH_LAYOUT and runtime is not Runtime.PYTHON_TORCH:
        raise ExportError(f"--torch-layout {options.torch_layout} is for --runtime python-torch, not {runtime.value}")


def check_chosen(options: ExportOptions, runtime: Runtime, precision: Precision) -> None:
    """What the precision the export settled on (the option's, or the GPU profile's) rules out."""
    if precision not in GATED and (options.texts or options.labels):
        raise ExportError("--texts and --labels feed the INT8/FP8 accuracy gate: add --precision int8 (CPU runtimes) "
                          "or fp8 (python-torch)")
    if precision is Precision.FP16 and runtime.openvino:
        raise ExportError(f"{runtime.value} converts the FP32 graph for the CPU, where FP16 is no gain: "
                          "--precision fp32 or int8" + (f" (fp16 is the {options.gpu} profile's: its GPU runtimes "
                                                        "serve it)" if options.gpu else ""))
    if options.torch_layout == "packed":
        try:
            check_packed_precision(precision.value, on_gpu=options.torch_device == "gpu")
        except ValueError as exc:
            raise ExportError(str(exc)) from None
