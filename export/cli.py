"""``python -m export``: checkpoint -> ONNX (validated against PyTorch) -> Triton model repository."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from export import agreement
from export.checkpoint import OFFLINE_ALIASES, load_checkpoint
from export.errors import ExportError, ValidationError
from export.gpu_profiles import CARDS, ModelShape, card_for, gpu_profile
from export.hf2torch import export_plain_torch, plain_torch_runner, require_plain_bert
from export.onnx2int8 import quantize_encoder
from export.onnx2trt import build_engine, engine_runner, import_tensorrt, sequence_profiles
from export.repository import (
    ENCODER,
    Runtime,
    ServingSettings,
    copy_static_models,
    encoder_batch_rows,
    encoder_config,
    ensemble_config,
    file_digest,
    postprocess_config,
    preprocess_config,
    staged_repository,
    write_config,
    write_encoder_files,
)
from export.tokenizer import write_tokenizer_json
from export.torch2onnx import Precision, export_onnx
from export.validate import ValidationReport, sample_batches, validate_onnx, validate_outputs
from zsc_server.admission import AdmissionSettings
from zsc_server.gpus import describe, visible_gpus
from zsc_server.label_cache import DEFAULT_BUDGET_MIB, LabelCacheSettings
from zsc_server.onnx_encoder import OnnxEncoder
from zsc_server.preprocess import Preprocessor
from zsc_server.settings import (
    CPU_BUCKETS,
    DEFAULT_BUCKETS,
    REPLAY_OVERHEAD_TOKENS,
    ScoringMode,
    ScoringSettings,
    sequence_buckets,
)
from zsc_server.tokenization import PairTokenizer

MODEL_MAX_LENGTH = "model"  # --max-length model: as long as the model takes (the pipeline's truncation)

STEPS = 5
# The encoder queue's wait budget (--queue-timeout-ms auto): under overload, stale requests are turned away
# instead of answered late; a closed loop (clients that each wait for their answer, whose requests fit in a
# batch) should never be refused: it cannot overload anything. A request may wait for the batch in flight and
# then for its own, so the budget is 2x the encoder's time for a full batch (its time per row on a sample
# request x the most rows one execution takes), within 600 ms-10 s. Never under 600 ms: Triton 2.51's
# dynamic batcher, once its queue has a policy, sometimes sleeps its full 500 ms while requests wait and the
# instance is free, until another request arrives. The count is not bounded by default (--max-queue-size 0):
# a full queue turns arrivals away without waking the batcher, and those sleeps then idle the encoder
# (docs/limits-failures-security.md, "Overload").
QUEUE_BUDGET_BATCHES = 2
QUEUE_BUDGET_MS = (600, 10_000)
GPU_QUEUE_BUDGET_MS = QUEUE_BUDGET_MS[0]
CPU_RUNTIMES = (Runtime.PYTHON_ORT, Runtime.ONNXRUNTIME)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a zero-shot classifier to a Triton model repository: "
        "ensemble zero_shot = preprocess (tokenize) -> encoder (ONNX) -> postprocess (scores).",
        epilog="examples:\n"
        "  python -m export --model offline-minilm            # bundled all-MiniLM-L6-v2, offline\n"
        "  python -m export --model damo/nlp_structbert_zero-shot-classification_chinese-base\n"
        "  python -m export --model ./my-structbert --max-length 256 --runtime onnxruntime\n"
        "  python -m export --model ./bart-large-mnli --max-length model   # truncate as the HF pipeline\n"
        "  python -m export --model ./my-structbert --precision int8            # CPU: INT8, accuracy-gated\n"
        "  python -m export --model ./my-structbert --precision int8 --validate-only --texts my-texts.txt \\\n"
        "      --labels '咨询,投诉,建议'                 # INT8 vs FP32 on your own texts; writes nothing",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", required=True,
        help="checkpoint directory (ModelScope, Hugging Face or sentence-transformers layout), hub id "
        f"(damo/... from ModelScope, others from Hugging Face), or an offline alias: {', '.join(OFFLINE_ALIASES)}",
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="model repository to write (default: %(default)s)")
    parser.add_argument("--precision", type=Precision, choices=[p.value for p in Precision], default=None,
                        help="encoder precision (default: the GPU profile's, else fp32). int8: CPU runtimes "
                             "(python-ort, onnxruntime) only; weights quantized to INT8, answers checked against "
                             "FP32 by the accuracy gate (--texts, --labels, --accuracy-gate)")
    parser.add_argument("--runtime", type=Runtime, choices=[r.value for r in Runtime], default=None,
                        help="python-ort: ONNX Runtime in a Python-backend model (CPU; runs with the pytriton "
                        "wheel); onnxruntime: native onnxruntime_onnx backend with TensorRT/CUDA accelerators; "
                        "tensorrt: a TensorRT engine, one profile per sequence bucket (both: NGC container); "
                        "python-torch: plain-torch BERT on the GPU with CUDA graphs, Python backend "
                        "(default: python-torch with --gpu, else python-ort)")
    parser.add_argument("--gpu", choices=[*CARDS, "auto", "none"], default="auto",
                        help="GPU profile: precision, batch sizes, queue delay, instances for that card. "
                             "auto (default): the profile of the GPU nvidia-smi lists here, if any, with the "
                             "python-torch runtime; none: export for the CPU even where a GPU is visible")
    parser.add_argument("--torch-device", choices=["gpu", "cpu"], default="gpu",
                        help="python-torch: run on the GPU (KIND_GPU) or the CPU (default: gpu)")
    parser.add_argument("--trt-workspace-gib", type=float, default=4.0,
                        help="tensorrt: builder workspace limit in GiB (default: 4)")
    parser.add_argument("--max-length", type=_max_length, default=128,
                        help="max tokens per (text, hypothesis) pair; the text is truncated first (default: 128); "
                             f"'{MODEL_MAX_LENGTH}': the model's own limit, where transformers' pipeline truncates "
                             "(the tokenizer's model_max_length: 512 for most, 1024 for BART)")
    parser.add_argument("--buckets", default="auto",
                        help="padded sequence lengths, e.g. 16,32,64 (max length is always the last); "
                             "auto: fine steps for python-ort (CPU), 16/32/64/... for GPU runtimes")
    parser.add_argument("--template", default=None,
                        help="default hypothesis template, must contain {} (default: 'This example is {}.' for "
                             "Hugging Face NLI checkpoints, as transformers' pipeline; '{}' for ModelScope and "
                             "sentence-transformers checkpoints, as ModelScope's pipeline)")
    parser.add_argument("--max-labels", type=int, default=256, help="labels per request limit (default: 256)")
    parser.add_argument("--max-text-bytes", type=int, default=65536,
                        help="TEXT size limit in UTF-8 bytes (default: 65536)")
    parser.add_argument("--max-labels-bytes", type=int, default=65536,
                        help="all candidate labels together, in UTF-8 bytes (default: 65536)")
    parser.add_argument("--queue-delay-us", type=int, default=None,
                        help="encoder dynamic batcher max queue delay in microseconds "
                             "(default: the GPU profile's, else 2000)")
    parser.add_argument("--replay-overhead-tokens", type=int, default=REPLAY_OVERHEAD_TOKENS,
                        help="python-torch on a GPU: a batch runs as replays of CUDA graphs of the captured batch "
                             "sizes, chosen to minimise padded rows x tokens plus this much per replay (its fixed "
                             f"cost); a large value pads each batch up to one graph (default: {REPLAY_OVERHEAD_TOKENS}"
                             ", measured on an H200)")
    parser.add_argument("--encoder-instances", type=int, default=None,
                        help="encoder instances (default: the GPU profile's, else 1)")
    parser.add_argument("--max-queue-size", type=int, default=0,
                        help="encoder requests allowed to wait; more are rejected at once as UNAVAILABLE "
                             "(default: 0, no bound on the count: the wait budget, --queue-timeout-ms, bounds "
                             "the queue)")
    parser.add_argument("--queue-timeout-ms", default="auto",
                        help="a request waiting longer in the encoder queue is rejected as busy, so that what is "
                             "answered under overload waited at most this long. auto (default): "
                             f"{QUEUE_BUDGET_BATCHES} x the encoder's time for a full batch (from its time per "
                             f"pair on a sample request, measured at export), within "
                             f"{QUEUE_BUDGET_MS[0]}-{QUEUE_BUDGET_MS[1]} ms on the CPU; "
                             f"{GPU_QUEUE_BUDGET_MS} ms with a GPU profile")
    parser.add_argument("--admission-target-ms", default="off",
                        help="admission control (zsc_server/admission.py): while even the quickest answers of an "
                             "interval spent longer than this in the server, a new request is held in the "
                             "preprocess, before tokenizing, and those behind it are turned away by Triton's "
                             "bounded queue. auto: 3x the service time the server measures; a number of ms; "
                             "off (default: on 2 cores it answered less than the encoder queue's time budget "
                             "alone, see docs/limits-failures-security.md)")
    parser.add_argument("--admission-interval-ms", type=float, default=AdmissionSettings.interval_ms,
                        help="admission control's shortest interval; with an automatic target, 10 service times "
                             "when longer (default: %(default)s)")
    parser.add_argument("--preprocess-instances", type=int, default=2,
                        help="tokenizer model instances (default: 2)")
    parser.add_argument("--cpu-cores", type=int, default=0,
                        help="onnxruntime INT8 on CPU: cores the serving machine gives the encoder; its threads "
                             "per instance = cores / --encoder-instances (default: this machine's). python-ort "
                             "counts the cores when the server loads the model")
    parser.add_argument("--label-cache-mb", type=float, default=DEFAULT_BUDGET_MIB,
                        help="embedding mode: MiB of hypothesis embeddings each preprocess instance keeps, so "
                             "that a label set is encoded once, not with every request; 0 turns the cache off "
                             "(default: %(default)s; NLI mode has no label cache)")
    parser.add_argument("--cache-dir", default=None, help="hub download cache (default: the hub's own)")
    gate = parser.add_argument_group(
        "INT8 accuracy gate",
        f"INT8 answers against FP32 on {agreement.DEFAULT_REQUESTS} requests (texts x label sets x templates): "
        f"fails the export when max |Δ score| > {agreement.GATE.max_abs_delta}, mean |Δ score| > "
        f"{agreement.GATE.mean_abs_delta} or top-1 agreement < {agreement.GATE.top1_agreement:.0%} (FP32 near-ties "
        f"within {agreement.TIE_MARGIN} count as agreement). Random-weight checkpoints cannot show accuracy.")
    gate.add_argument("--texts", type=Path, default=None,
                      help="texts to check on: one per line, or a JSON file like loadtest/data/workload.json "
                           "(texts, label_sets) (default: loadtest/data/workload.json)")
    gate.add_argument("--labels", action="append", default=None, metavar="'A,B,C'",
                      help="a label set for --texts (repeat for several; default: the JSON file's label sets, "
                           "else the workload's)")
    gate.add_argument("--gate-requests", type=int, default=agreement.DEFAULT_REQUESTS,
                      help="how many (text, label set) requests to check (default: %(default)s)")
    gate.add_argument("--accuracy-gate", choices=["enforce", "report"], default="enforce",
                      help="enforce: an INT8 model over the limits is not exported (default); report: print "
                           "the figures and export anyway (random-weight checkpoints, whose scores are noise)")
    parser.add_argument("--validate-only", action="store_true",
                        help="steps 1-4 only (export and check the encoder, the INT8 gate included), write nothing")
    return parser


def _max_length(value: str) -> int | str:
    if value == MODEL_MAX_LENGTH:
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of tokens or '{MODEL_MAX_LENGTH}', got {value!r}") from None


def step(number: int, message: str) -> None:
    print(f"[export {number}/{STEPS}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    repository: Path = args.repository
    args.gpu = choose_gpu(args.gpu, args.runtime, args.torch_device, args.precision)
    runtime = args.runtime or (Runtime.PYTHON_TORCH if args.gpu else Runtime.PYTHON_ORT)
    if args.precision is Precision.INT8 and (runtime not in CPU_RUNTIMES or args.gpu):
        raise ExportError(f"--precision int8 is for the CPU runtimes (python-ort, onnxruntime without --gpu), "
                          f"not {runtime.value}{' with --gpu' if args.gpu else ''}: use fp16 or fp32 on the GPU")

    step(1, f"loading {args.model}")
    ckpt = load_checkpoint(args.model, args.cache_dir)
    if runtime is Runtime.PYTHON_TORCH:
        require_plain_bert(ckpt)
    max_length = ckpt.max_length_limit if args.max_length == MODEL_MAX_LENGTH else args.max_length
    if max_length > ckpt.max_length_limit:
        raise ExportError(f"--max-length {max_length} exceeds what the model takes ({ckpt.max_length_limit} tokens: "
                          "its positions and its tokenizer's model_max_length)")
    step(1, f"{ckpt.layout} layout ({ckpt.model_type}) from {ckpt.directory}: {ckpt.mode.value} mode, "
            f"output {ckpt.output_name!r}, inputs {', '.join(ckpt.input_names)}")
    profile = gpu_profile(args.gpu, model_shape(ckpt), max_length) if args.gpu else None
    if profile:
        step(1, f"GPU profile {args.gpu}: {profile.summary()}")
    precision = args.precision or (profile.precision if profile else Precision.FP32)
    if precision is not Precision.INT8 and (args.texts or args.labels):
        raise ExportError("--texts and --labels feed the INT8 accuracy gate: add --precision int8")
    if args.gate_requests < 1:
        raise ExportError(f"--gate-requests must be at least 1, got {args.gate_requests}")
    max_labels = args.max_labels
    if profile and max_labels + 1 > profile.max_batch:
        max_labels = profile.max_batch - 1
        step(1, f"labels per request limited to {max_labels}: one request must fit the card's largest batch")
    try:
        scoring = ScoringSettings(
            mode=ckpt.mode, max_length=max_length, buckets=parse_buckets(args.buckets, max_length, runtime),
            default_template=ckpt.default_template if args.template is None else args.template,
            entailment_index=ckpt.entailment_index, contradiction_index=ckpt.contradiction_index,
            max_labels=max_labels, max_text_bytes=args.max_text_bytes, max_labels_bytes=args.max_labels_bytes,
            encoder_inputs=ckpt.input_names,
        )
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    serving = ServingSettings(
        runtime=runtime, precision=precision.value,
        queue_delay_us=first(args.queue_delay_us, profile and profile.queue_delay_us, 2000),
        encoder_instances=first(args.encoder_instances, profile and profile.encoder_instances, 1),
        preprocess_instances=args.preprocess_instances,
        preferred_batch_sizes=profile.preferred_batch_sizes if profile else (),
        max_batch=profile.max_batch if profile else 0,
        max_queue_size=args.max_queue_size,
        torch_device=args.torch_device,
        graph_batch_sizes=profile.graph_batch_sizes if profile else ServingSettings.graph_batch_sizes,
        replay_overhead_tokens=args.replay_overhead_tokens,
        tensorrt_profiles=len(scoring.buckets) if runtime is Runtime.TENSORRT else 0,
        cpu_cores=args.cpu_cores,
    )
    try:
        enabled, target_ms = AdmissionSettings.parse_target(args.admission_target_ms)
    except ValueError:
        raise ExportError(f"--admission-target-ms must be auto, off or a positive number, "
                          f"got {args.admission_target_ms!r}") from None
    admission = AdmissionSettings(enabled, target_ms, interval_ms=args.admission_interval_ms)
    step(1, f"admission control: {admission.describe()}")
    serving = dataclasses.replace(serving, admission=admission)
    entailment = ckpt.entailment_index if ckpt.mode is ScoringMode.NLI else None
    label_cache_mib = label_cache_budget(args, ckpt.mode, precision)

    # Everything is produced and validated in a scratch dir, the repository assembled in a staging dir
    # beside the target and swapped in at the end: an export that fails or is interrupted half way leaves
    # the served repository as it was.
    with tempfile.TemporaryDirectory(prefix="zsc-export-") as tmp:
        tokenizer_path = Path(tmp) / "tokenizer.json"
        step(2, f"tokenizer: {write_tokenizer_json(ckpt.directory, ckpt.tokenizer, tokenizer_path)}")
        tokenizer = PairTokenizer(tokenizer_path, scoring.max_length, scoring.buckets)
        batches = sample_batches(tokenizer, pairs=ckpt.mode is ScoringMode.NLI)

        artifact, report = encoder_artifact(args, runtime, precision, ckpt, scoring, profile, batches, entailment,
                                            Path(tmp))
        budget_ms = queue_budget_ms(args, profile, runtime, artifact, batches[0],
                                    encoder_batch_rows(scoring, serving))
        serving = dataclasses.replace(serving, queue_timeout_us=budget_ms * 1000)
        # The preprocess sends, and the ensemble passes, exactly the inputs the exported encoder declares.
        scoring = dataclasses.replace(scoring, encoder_inputs=encoder_inputs(artifact, runtime, ckpt))
        # the cached label vectors belong to this encoder file: its hash names them
        label_cache = LabelCacheSettings.from_mib(label_cache_mib, export_id=file_digest(artifact),
                                                  encoder_model=ENCODER, encoder_output=ckpt.output_name)
        if args.validate_only:
            print(f"[export] validated in {time.perf_counter() - started:.1f}s; --validate-only: nothing written",
                  flush=True)
            return
        with staged_repository(repository) as staging:
            step(5, f"writing {runtime.value} repository to {repository}/")
            copy_static_models(staging)
            shutil.copyfile(tokenizer_path, staging / "preprocess" / "1" / "tokenizer.json")
            version_dir = write_encoder_files(staging, runtime, artifact)
            info = {
                "source": args.model, "layout": ckpt.layout, "model_type": ckpt.model_type, "mode": ckpt.mode.value,
                "encoder_inputs": list(scoring.encoder_inputs), "default_template": scoring.default_template,
                "precision": precision.value, "runtime": runtime.value, "gpu_profile": args.gpu or "",
                "max_length": scoring.max_length, "buckets": list(scoring.buckets),
                "validation_max_abs_diff": report.max_abs_diff,
                "validation_label_order_agreement": report.order_agreement,
                "export_id": label_cache.export_id, "label_cache_bytes": label_cache.budget_bytes,
            }
            if report.int8_agreement:
                info["int8_agreement"] = report.int8_agreement
            for config in (
                preprocess_config(scoring, serving, label_cache),
                encoder_config(scoring, serving, ckpt.output_name, _output_width(ckpt),
                               ckpt.encoder_limits(scoring.max_length)),
                postprocess_config(scoring, serving),
                ensemble_config(ckpt.output_name, served_export_info(args.model, info),
                                encoder_inputs=scoring.encoder_inputs),
            ):
                print(f"    {repository / write_config(staging, config).relative_to(staging)}")
            (version_dir.parent / "export.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    print(f"[export] done in {time.perf_counter() - started:.1f}s: serve it with `make serve`", flush=True)


def queue_budget_from_sample(service_ms: float, rows: int, batch_rows: int) -> tuple[int, float]:
    """(budget ms, a full batch's estimated ms) from the encoder's time for `rows` pairs."""
    full_batch_ms = service_ms / rows * batch_rows
    return int(min(QUEUE_BUDGET_MS[1], max(QUEUE_BUDGET_MS[0], QUEUE_BUDGET_BATCHES * full_batch_ms))), full_batch_ms


def queue_budget_ms(args, profile, runtime: Runtime, artifact: Path, batch, batch_rows: int) -> int:
    """--queue-timeout-ms: as given, or `auto`: QUEUE_BUDGET_BATCHES full batches of `batch_rows` pairs at the
    encoder's measured time per pair on one sample request (CPU time grows with the pairs)."""
    if args.queue_timeout_ms != "auto":
        try:
            return int(args.queue_timeout_ms)
        except ValueError:
            raise ExportError(f"--queue-timeout-ms must be auto or a number of ms, "
                              f"got {args.queue_timeout_ms!r}") from None
    if profile or runtime is Runtime.TENSORRT or (runtime is Runtime.PYTHON_TORCH and args.torch_device == "gpu"):
        step(4, f"encoder queue budget: {GPU_QUEUE_BUDGET_MS} ms (GPU)")
        return GPU_QUEUE_BUDGET_MS
    if runtime is Runtime.PYTHON_TORCH:
        run, feeds = plain_torch_runner(artifact), batch.as_dict()
    else:
        encoder = OnnxEncoder(str(artifact))
        feeds = batch.as_dict(tuple(encoder.input_names))

        def run(inputs):
            return encoder.run_batch([inputs])
    run(feeds)  # warm-up
    times = []
    for _ in range(5):
        started = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - started) * 1e3)
    service_ms = sorted(times)[2]
    rows = feeds["input_ids"].shape[0]
    budget, full_batch_ms = queue_budget_from_sample(service_ms, rows, batch_rows)
    step(4, f"encoder queue budget: {budget} ms ({QUEUE_BUDGET_BATCHES} x {full_batch_ms:.0f} ms for a full batch of "
            f"{batch_rows} pairs: {service_ms:.1f} ms for the {rows} pairs of a sample request here, within "
            f"{QUEUE_BUDGET_MS[0]}-{QUEUE_BUDGET_MS[1]} ms)")
    return budget


def label_cache_budget(args: argparse.Namespace, mode: ScoringMode, precision: Precision) -> float:
    """MiB per preprocess instance for the label cache: 0 in NLI mode, which cannot reuse label vectors, and
    with INT8, whose vectors depend on the run that computed them."""
    if args.label_cache_mb < 0:
        raise ExportError(f"--label-cache-mb must be 0 (off) or more, got {args.label_cache_mb}")
    if mode is ScoringMode.NLI:
        step(1, "label cache: none in NLI mode (each text is encoded together with each hypothesis)")
        return 0.0
    if precision is Precision.INT8 and args.label_cache_mb:
        # dynamic quantization scales activations per run: a label's vector computed alone (a cache miss) is
        # not the one computed beside the request's text, so cached and uncached answers would differ
        step(1, "label cache: off with INT8 (a vector's quantization depends on the run that computed it)")
        return 0.0
    step(1, f"label cache: {args.label_cache_mb:g} MiB per preprocess instance" if args.label_cache_mb
         else "label cache: off (--label-cache-mb 0)")
    return args.label_cache_mb


def choose_gpu(requested: str | None, runtime: Runtime | None, torch_device: str,
               precision: Precision | None = None) -> str | None:
    """The GPU profile to export with: the one asked for, or with `auto` the visible GPU's (None: CPU)."""
    if requested != "auto":
        return None if requested in (None, "none") else requested
    gpus = visible_gpus()
    if not gpus:
        step(1, "no GPU visible (nvidia-smi): exporting for the CPU; --gpu CARD exports for a card elsewhere")
        return None
    cpu_only = ("--runtime python-ort" if runtime is Runtime.PYTHON_ORT else "--torch-device cpu"
                if torch_device == "cpu" else "--precision int8" if precision is Precision.INT8 else None)
    if cpu_only:
        step(1, f"{describe(gpus)} visible, but the encoder was asked to run on the CPU ({cpu_only}): "
                "no GPU profile")
        return None
    card, why = card_for(gpus[0].name, gpus[0].memory_mib)
    step(1, f"{describe(gpus)} visible: GPU profile {card} ({why}), runtime {(runtime or Runtime.PYTHON_TORCH).value}"
            "; --gpu none exports for the CPU instead")
    return card


def encoder_artifact(args, runtime: Runtime, precision: Precision, ckpt, scoring: ScoringSettings, profile,
                     batches, entailment: int | None, tmp: Path) -> tuple[Path, ValidationReport]:
    """Steps 3-4: the encoder file the runtime serves, validated against the FP32 PyTorch model."""
    if runtime is Runtime.PYTHON_TORCH:
        step(3, "saving the plain-torch BERT (shape + FP32 weights; the server casts to FP16 on the GPU)")
        path = export_plain_torch(ckpt, tmp / "model.pt")
        step(4, "validating the plain-torch encoder (CPU, FP32) against the checkpoint's PyTorch model")
        report = validate_outputs(ckpt.module, plain_torch_runner(path), batches, Precision.FP32,
                                  "plain-torch", entailment)
        step(4, str(report))
        return path, report

    # TensorRT lowers precision itself from an FP32 graph (and can keep chosen layers in FP32); INT8 is
    # quantized from the FP32 graph
    onnx_precision = Precision.FP32 if runtime is Runtime.TENSORRT or precision is Precision.INT8 else precision
    onnx_path = tmp / ("model-fp32.onnx" if precision is Precision.INT8 else "model.onnx")
    step(3, f"exporting ONNX ({onnx_precision.value}, opset 17, dynamic batch_size/sequence_length)")
    export_onnx(ckpt.module, ckpt.output_name, onnx_path, onnx_precision)
    step(3, f"wrote {onnx_path.stat().st_size / 1e6:.1f} MB")
    step(4, "validating ONNX Runtime against PyTorch on sample inputs")
    report = validate_onnx(ckpt.module, onnx_path, ckpt.output_name, batches, onnx_precision, entailment)
    step(4, str(report))
    if precision is Precision.INT8:
        return quantized_encoder(args, onnx_path, scoring, report, ckpt.output_name, tmp / "tokenizer.json")
    if runtime is not Runtime.TENSORRT:
        return onnx_path, report
    return build_validated_engine(args, precision, ckpt, scoring, profile, batches, entailment, onnx_path)


def quantized_encoder(args, fp32_path: Path, scoring: ScoringSettings, report: ValidationReport, output_name: str,
                      tokenizer_path: Path) -> tuple[Path, ValidationReport]:
    """Step 4 for INT8: quantize the validated FP32 graph, then the accuracy gate against it."""
    int8_path = fp32_path.with_name("model.onnx")
    step(4, f"quantizing to INT8: {quantize_encoder(fp32_path, int8_path)}")
    texts, label_sets = agreement.read_texts_and_label_sets(args.texts, args.labels)
    # the export's default template (the checkpoint family's, or --template) first, then the workload's
    templates = (scoring.default_template, *(t for t in agreement.TEMPLATES if t != scoring.default_template))
    requests = agreement.gate_requests(texts, label_sets, templates, args.gate_requests)
    step(4, f"accuracy gate: INT8 vs FP32 on {len(requests)} requests from {args.texts or agreement.WORKLOAD.name} "
            f"({len(texts)} texts x {len(label_sets)} label sets, templates {list(templates)})")
    preprocessor = Preprocessor(scoring, tokenizer_path)
    started = time.perf_counter()
    fp32, int8 = (agreement.answers(encoder_runner(path, output_name), preprocessor, scoring, requests)
                  for path in (fp32_path, int8_path))
    gate = agreement.compare_answers(fp32, int8)
    step(4, f"{gate} [{time.perf_counter() - started:.0f}s]")
    if args.accuracy_gate == "enforce":
        agreement.enforce(gate)
        step(4, "accuracy gate passed")
    elif gate.failures():
        step(4, f"accuracy gate NOT passed ({'; '.join(gate.failures())}); exporting anyway (--accuracy-gate report)")
    return int8_path, dataclasses.replace(report, int8_agreement=dict(gate.as_dict(), gate=args.accuracy_gate,
                                                                         passed=not gate.failures()))


def encoder_runner(onnx_path: Path, output_name: str):
    """One request through the encoder as the python-ort runtime runs it."""
    encoder = OnnxEncoder(str(onnx_path))
    return lambda feeds: encoder.run_batch([feeds])[0][output_name]


def build_validated_engine(args, precision: Precision, ckpt, scoring: ScoringSettings, profile, batches,
                           entailment: int | None, onnx_path: Path) -> tuple[Path, ValidationReport]:
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
        build = build_engine(onnx_path, plan_path, profiles, fp16, keep_fp32, args.trt_workspace_gib, trt)
        step(4, f"built: {build}")
        try:
            report = validate_outputs(ckpt.module, engine_runner(plan_path, profiles, ckpt.output_name, trt),
                                      batches, precision, "TensorRT", entailment)
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


def first(*values):
    """The first value that is set: an explicit option, then the GPU profile's, then the default."""
    return next(value for value in values if value is not None and value is not False)


def model_shape(ckpt) -> ModelShape:
    config = ckpt.module.model.config
    # BART names its feed-forward width encoder_ffn_dim (its other sizes map to the BERT names)
    intermediate = getattr(config, "intermediate_size", None) or config.encoder_ffn_dim
    return ModelShape(hidden=config.hidden_size, layers=config.num_hidden_layers, heads=config.num_attention_heads,
                      intermediate=intermediate, vocab=config.vocab_size)


def parse_buckets(spec: str, max_length: int, runtime: Runtime) -> tuple[int, ...]:
    if spec == "auto":
        candidates = CPU_BUCKETS if runtime is Runtime.PYTHON_ORT else DEFAULT_BUCKETS
    else:
        try:
            candidates = tuple(int(part) for part in spec.split(",") if part.strip())
        except ValueError:
            raise ExportError(f"--buckets must be 'auto' or comma-separated lengths, got {spec!r}") from None
    return sequence_buckets(max_length, candidates)


def served_export_info(model: str, info: dict) -> dict[str, str]:
    """The export facts the served config carries; a local checkpoint by its folder name only, so
    the server does not publish paths of the machine that exported it."""
    shown = dict(info, source=Path(model).name if Path(model).exists() else model)
    return {key: str(shown[key]) for key in ("source", "precision", "runtime", "mode", "max_length")}


def _output_width(ckpt) -> int:
    if ckpt.mode is ScoringMode.NLI:
        return int(ckpt.module.model.config.num_labels)
    return int(ckpt.module.model.config.hidden_size)
