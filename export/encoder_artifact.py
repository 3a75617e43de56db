"""Steps 3-4 of an export: the encoder file the runtime serves (ONNX, INT8 ONNX, TensorRT engine or plain-torch
BERT), validated against the checkpoint's FP32 PyTorch model; INT8 and FP8 through the accuracy gate."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from export import agreement
from export.errors import ExportError, ValidationError
from export.hf2torch import export_plain_torch, plain_torch_runner
from export.onnx2int8 import quantize_encoder
from export.onnx2ov import CALIBRATION_BATCHES, quantize_static, to_openvino
from export.onnx2trt import build_engine, engine_runner, import_tensorrt, sequence_profiles
from export.options import ExportOptions
from export.progress import step
from export.repository import Runtime
from export.torch2onnx import Precision, export_onnx
from export.validate import Ranking, ValidationReport, validate_onnx, validate_outputs
from zsc_server.onnx_encoder import OnnxEncoder
from zsc_server.preprocess import Preprocessor
from zsc_server.settings import ScoringSettings


def encoder_artifact(options: ExportOptions, runtime: Runtime, precision: Precision, ckpt, scoring: ScoringSettings,
                     profile, batches, ranking: Ranking, tmp: Path) -> tuple[Path, ValidationReport]:
    """Steps 3-4: the encoder file the runtime serves, validated against the FP32 PyTorch model."""
    if runtime is Runtime.PYTHON_TORCH:
        step(3, "saving the plain-torch BERT (shape + FP32 weights; the server casts them to its precision)")
        path = export_plain_torch(ckpt, tmp / "model.pt")
        step(4, f"validating the plain-torch encoder ({options.torch_layout} layout; CPU, FP32) against the "
                "checkpoint's PyTorch model")
        report = validate_outputs(ckpt.module, plain_torch_runner(path, options.torch_layout), batches,
                                  Precision.FP32, f"plain-torch ({options.torch_layout})", ranking)
        step(4, str(report))
        if precision is Precision.FP8:
            report = dataclasses.replace(report, accuracy_gate=fp8_gate(options, scoring, path, tmp / "tokenizer.json"))
        return path, report

    # TensorRT lowers precision itself from an FP32 graph (and can keep chosen layers in FP32); INT8 is
    # quantized from the FP32 graph
    # OpenVINO converts (and quantizes) from the FP32 graph too
    from_fp32 = runtime is Runtime.TENSORRT or runtime.openvino or precision is Precision.INT8
    onnx_precision = Precision.FP32 if from_fp32 else precision
    ort_int8 = precision is Precision.INT8 and not runtime.openvino
    onnx_path = tmp / ("model-fp32.onnx" if ort_int8 else "model.onnx")
    step(3, f"exporting ONNX ({onnx_precision.value}, opset 17, dynamic batch_size/sequence_length)")
    export_onnx(ckpt.module, ckpt.output_name, onnx_path, onnx_precision)
    step(3, f"wrote {onnx_path.stat().st_size / 1e6:.1f} MB")
    step(4, "validating ONNX Runtime against PyTorch on sample inputs")
    report = validate_onnx(ckpt.module, onnx_path, ckpt.output_name, batches, onnx_precision, ranking)
    step(4, str(report))
    if runtime.openvino:
        return openvino_encoder(options, precision, ckpt, scoring, batches, ranking, onnx_path,
                                tmp / "tokenizer.json")
    if precision is Precision.INT8:
        return quantized_encoder(options, onnx_path, scoring, report, ckpt.output_name, tmp / "tokenizer.json")
    if runtime is not Runtime.TENSORRT:
        return onnx_path, report
    return build_validated_engine(options, precision, ckpt, scoring, profile, batches, ranking, onnx_path)


def quantized_encoder(options: ExportOptions, fp32_path: Path, scoring: ScoringSettings, report: ValidationReport,
                      output_name: str, tokenizer_path: Path) -> tuple[Path, ValidationReport]:
    """Step 4 for INT8 on ONNX Runtime: quantize the validated FP32 graph (dynamically), then the accuracy gate
    against it."""
    int8_path = fp32_path.with_name("model.onnx")
    step(4, f"quantizing to INT8: {quantize_encoder(fp32_path, int8_path)}")
    texts, label_sets = agreement.read_texts_and_label_sets(options.texts, options.labels)
    gate = accuracy_gate(options, scoring, Preprocessor(scoring, tokenizer_path),
                         encoder_runner(fp32_path, output_name), encoder_runner(int8_path, output_name),
                         texts, label_sets)
    return int8_path, dataclasses.replace(report, accuracy_gate=gate)


def openvino_encoder(options: ExportOptions, precision: Precision, ckpt, scoring: ScoringSettings, batches,
                     ranking: Ranking, onnx_path: Path, tokenizer_path: Path) -> tuple[Path, ValidationReport]:
    """Steps 3-4 for python-ov: the FP32 IR validated against PyTorch; for INT8, quantized statically on
    calibration requests, then the accuracy gate against the FP32 IR."""
    int8 = precision is Precision.INT8
    fp32_xml = to_openvino(onnx_path, onnx_path.with_name("model-fp32.xml" if int8 else "model.xml"))
    step(3, f"converted to OpenVINO IR ({fp32_xml.with_suffix('.bin').stat().st_size / 1e6:.1f} MB of FP32 weights)")
    step(4, "validating OpenVINO (FP32) against PyTorch on sample inputs")
    report = validate_outputs(ckpt.module, ov_runner(fp32_xml, ckpt.output_name), batches, Precision.FP32,
                              "OpenVINO", ranking)
    step(4, str(report))
    if not int8:
        return fp32_xml, report
    preprocessor = Preprocessor(scoring, tokenizer_path)
    texts, label_sets = agreement.read_texts_and_label_sets(options.texts, options.labels)
    # calibration: another sample of the gate's requests, so that the gate does not only judge what was seen
    calibration = [preprocessor.prepare(request.text.encode(), [label.encode() for label in request.labels],
                                        request.template.encode()).encoded.as_dict(scoring.encoder_inputs)
                   for request in agreement.gate_requests(texts, label_sets, gate_templates(scoring),
                                                          CALIBRATION_BATCHES, seed=1)]
    int8_xml = onnx_path.with_name("model.xml")
    step(4, f"quantizing to INT8: {quantize_static(fp32_xml, int8_xml, calibration)}")
    gate = accuracy_gate(options, scoring, preprocessor, ov_runner(fp32_xml, ckpt.output_name),
                         ov_runner(int8_xml, ckpt.output_name), texts, label_sets)
    return int8_xml, dataclasses.replace(report, accuracy_gate=gate)


def fp8_gate(options: ExportOptions, scoring: ScoringSettings, path: Path, tokenizer_path: Path) -> dict:
    """The plain-torch BERT with FP8 encoder layers against itself in FP32, each run as the server runs it: on
    this machine's GPU where the export is for one and the GPU runs FP8 (its own kernels), else on the CPU (FP8's
    values, products in FP32: zsc_server.torch_fp8)."""
    import torch

    runners, why_not_gpu = None, "no CUDA GPU here" if options.torch_device == "gpu" else "--torch-device cpu"
    if options.torch_device == "gpu" and torch.cuda.is_available():
        try:
            runners = (plain_torch_runner(path, device="cuda"),
                       plain_torch_runner(path, options.torch_layout, "cuda", "fp8"))
        except ExportError as exc:  # e.g. a card without FP8 tensor cores, exporting for another
            why_not_gpu = str(exc)
    if runners:
        step(4, "FP8 runs on this GPU")
    else:
        step(4, f"FP8 runs emulated on the CPU (FP8 values, FP32 products): {why_not_gpu}")
        runners = (plain_torch_runner(path), plain_torch_runner(path, options.torch_layout, "cpu", "fp8"))
    texts, label_sets = agreement.read_texts_and_label_sets(options.texts, options.labels)
    return accuracy_gate(options, scoring, Preprocessor(scoring, tokenizer_path), *runners, texts, label_sets, "fp8")


def gate_templates(scoring: ScoringSettings) -> tuple[str, ...]:
    """The export's default template (the checkpoint family's, or --template) first, then the workload's."""
    return (scoring.default_template, *(t for t in agreement.TEMPLATES if t != scoring.default_template))


def accuracy_gate(options: ExportOptions, scoring: ScoringSettings, preprocessor: Preprocessor, fp32_runner,
                  quantized_runner, texts: list[str], label_sets: list[list[str]], precision: str = "int8") -> dict:
    """The quantized encoder's answers against FP32's on the gate's requests (`texts` x `label_sets`, as
    agreement.read_texts_and_label_sets reads them); raises (enforce) or reports (report) a failure."""
    templates = gate_templates(scoring)
    requests = agreement.gate_requests(texts, label_sets, templates, options.gate_requests)
    step(4, f"accuracy gate: {precision.upper()} vs FP32 on {len(requests)} requests from "
            f"{options.texts or agreement.WORKLOAD.name} ({len(texts)} texts x {len(label_sets)} label sets, "
            f"templates {list(templates)})")
    started = time.perf_counter()
    fp32, quantized = (agreement.answers(runner, preprocessor, scoring, requests)
                       for runner in (fp32_runner, quantized_runner))
    gate = agreement.compare_answers(fp32, quantized, precision=precision)
    step(4, f"{gate} [{time.perf_counter() - started:.0f}s]")
    if options.accuracy_gate == "enforce":
        agreement.enforce(gate)
        step(4, "accuracy gate passed")
    elif gate.failures():
        step(4, f"accuracy gate NOT passed ({'; '.join(gate.failures())}); exporting anyway (--accuracy-gate report)")
    return dict(gate.as_dict(), gate=options.accuracy_gate, passed=not gate.failures())


def ov_encoder(xml_path: Path):
    """The python-ov runtime's encoder (OpenVINO is imported only for it: the GPU host has none)."""
    from zsc_server.ov_encoder import OvEncoder

    return OvEncoder(str(xml_path))


def ov_runner(xml_path: Path, output_name: str):
    """One request through the encoder as the python-ov runtime runs it."""
    encoder = ov_encoder(xml_path)
    return lambda feeds: encoder.run_batch([feeds])[0][output_name]


def encoder_runner(onnx_path: Path, output_name: str):
    """One request through the encoder as the python-ort runtime runs it."""
    encoder = OnnxEncoder(str(onnx_path))
    return lambda feeds: encoder.run_batch([feeds])[0][output_name]


def build_validated_engine(options: ExportOptions, precision: Precision, ckpt, scoring: ScoringSettings, profile,
                           batches, ranking: Ranking, onnx_path: Path) -> tuple[Path, ValidationReport]:
    trt = import_tensorrt()
    max_batch = profile.max_batch if profile else scoring.max_labels + 1
    opt_batch = profile.preferred_batch_sizes[-1] if profile else min(32, max_batch)
    profiles = sequence_profiles(scoring.buckets, max(max_batch, scoring.max_labels + 1), opt_batch)
    plan_path = onnx_path.with_name("model.plan")
    fp16 = precision is Precision.FP16
    for keep_fp32 in ((False, True) if fp16 else (False,)):
        note = ", accumulation layers in FP32" if keep_fp32 else ""
        step(4, f"building the TensorRT engine ({precision.value}{note}), profiles: "
                + "; ".join(str(p) for p in profiles))
        build = build_engine(onnx_path, plan_path, profiles, fp16, keep_fp32, options.trt_workspace_gib, trt)
        step(4, f"built: {build}")
        try:
            report = validate_outputs(ckpt.module, engine_runner(plan_path, profiles, ckpt.output_name, trt),
                                      batches, precision, "TensorRT", ranking)
        except ValidationError as exc:
            if fp16 and not keep_fp32:
                step(4, f"{exc}; rebuilding with normalization/softmax/reduction layers kept in FP32")
                continue
            raise
        step(4, str(report))
        return plan_path, report
    raise AssertionError("unreachable: the last attempt returns or raises")


def encoder_inputs(artifact: Path, runtime: Runtime, ckpt) -> tuple[str, ...]:
    """The exported encoder's inputs: read from the ONNX graph (the TensorRT engine is built from it),
    the plain-torch BERT's three otherwise."""
    if runtime is Runtime.PYTHON_TORCH:
        return ckpt.input_names
    onnx_path = artifact.with_name("model.onnx")
    return tuple(OnnxEncoder(str(onnx_path), intra_op_threads=1).input_names)
