"""``python -m export``: the command line of an export (export.pipeline.export_model does the work). Every
flag is a field of export.options.ExportOptions, and takes its default from there."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from export import agreement
from export.errors import ExportError
from export.gpu_profiles import CARDS
from export.hub import OFFLINE_ALIASES
from export.options import (
    AUTO_MAX_LENGTH,
    DEFAULTS,
    GLICLASS_MAX_LENGTH,
    MODEL_MAX_LENGTH,
    PAIR_MAX_LENGTH,
    ExportOptions,
)
from export.pipeline import export_model
from export.repository import Runtime
from export.torch2onnx import Precision
from zsc_server.batching_policy import (
    ADMISSION_BUDGET_MS,
    ADMISSION_CLOSED_LOOP_REQUESTS,
    GPU_QUEUE_BUDGET_MS,
    QUEUE_BUDGET_BATCHES,
    QUEUE_BUDGET_MS,
    TORCH_LAYOUTS,
)


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
        help="checkpoint directory (ModelScope, Hugging Face, sentence-transformers or GLiClass layout), hub id "
        f"(damo/... from ModelScope, others from Hugging Face), or an offline alias: {', '.join(OFFLINE_ALIASES)}",
    )
    parser.add_argument("--repository", type=Path, default=DEFAULTS.repository,
                        help="model repository to write (default: %(default)s)")
    parser.add_argument("--precision", type=Precision, choices=[p.value for p in Precision], default=DEFAULTS.precision,
                        help="encoder precision (default: the GPU profile's; --gpu auto without a GPU: int8 where the "
                             "gate passes, else fp32; --gpu none: fp32). int8: CPU runtimes "
                             "(python-ort, python-ov, openvino, onnxruntime) only; weights quantized to INT8, answers "
                             "checked against FP32 by the accuracy gate (--texts, --labels, --accuracy-gate). fp8: "
                             "python-torch with the profile of a card with FP8 tensor cores (l4, h100, h200): the "
                             "encoder layers' products in FP8, the rest in BF16, through the same gate (run on this "
                             "GPU where it can, else emulated on the CPU, as --torch-device cpu serves it)")
    parser.add_argument("--runtime", type=Runtime, choices=[r.value for r in Runtime], default=DEFAULTS.runtime,
                        help="python-ort: ONNX Runtime in a Python-backend model (CPU; runs with the pytriton "
                        "wheel); python-ov: OpenVINO in a Python-backend model (CPU; INT8 statically quantized, "
                        "so it batches and keeps the label cache); openvino: the same on Triton's native openvino "
                        "backend (NGC container, CPU); onnxruntime: native onnxruntime_onnx backend "
                        "with TensorRT/CUDA accelerators; "
                        "tensorrt: a TensorRT engine, one profile per sequence bucket (both: NGC container); "
                        "python-torch: plain-torch BERT on the GPU with CUDA graphs, Python backend "
                        "(default: python-torch with a GPU profile; --gpu auto without a GPU: python-ov, the "
                        "fastest CPU runtime measured; --gpu none: python-ort)")
    parser.add_argument("--gpu", choices=[*CARDS, "auto", "none"], default=DEFAULTS.gpu,
                        help="GPU profile: precision, batch sizes, queue delay, instances for that card. "
                             "auto (default): the profile of the GPU nvidia-smi lists here, if any, with the "
                             "python-torch runtime, and without one the fastest CPU setup measured (python-ov INT8, "
                             "FP32 where the accuracy gate refuses INT8); none: export for the CPU (python-ort FP32 "
                             "unless --runtime / --precision say otherwise), even where a GPU is visible")
    parser.add_argument("--torch-device", choices=["gpu", "cpu"], default=DEFAULTS.torch_device,
                        help="python-torch: run on the GPU (KIND_GPU) or the CPU (default: %(default)s)")
    parser.add_argument("--torch-layout", choices=TORCH_LAYOUTS, default=DEFAULTS.torch_layout,
                        help="python-torch: padded (rows padded to their sequence bucket, a CUDA graph per batch "
                             "size and bucket) or packed (every row's real tokens end to end, attention per "
                             "sequence by FlashAttention's variable-length kernel, a CUDA graph per total-token "
                             "size; fp16 or fp8 on the GPU, torch 2.10 or later) (default: %(default)s)")
    parser.add_argument("--trt-workspace-gib", type=float, default=DEFAULTS.trt_workspace_gib,
                        help="tensorrt: builder workspace limit in GiB (default: %(default)s)")
    parser.add_argument("--max-length", type=max_length_value, default=DEFAULTS.max_length,
                        help="max tokens per (text, hypothesis) pair, or per GLiClass row; the text is truncated "
                             f"first. '{AUTO_MAX_LENGTH}' (default): {PAIR_MAX_LENGTH} for NLI and embedding models, "
                             f"the model's own limit up to {GLICLASS_MAX_LENGTH} for GLiClass (its labels share the "
                             f"row); '{MODEL_MAX_LENGTH}': the model's own limit, where transformers' pipeline "
                             "truncates (the tokenizer's model_max_length: 512 for most, 1024 for BART; a "
                             "sentence-transformers model's max_seq_length)")
    parser.add_argument("--buckets", default=DEFAULTS.buckets,
                        help="padded sequence lengths, e.g. 16,32,64 (max length is always the last); "
                             "auto: fine steps for python-ort (CPU), 16/32/64/... for GPU runtimes")
    parser.add_argument("--template", default=DEFAULTS.template,
                        help="default hypothesis template, must contain {} (default: 'This example is {}.' for "
                             "Hugging Face NLI checkpoints, as transformers' pipeline; '{}' for ModelScope and "
                             "sentence-transformers checkpoints, as ModelScope's pipeline)")
    parser.add_argument("--max-labels", type=int, default=DEFAULTS.max_labels,
                        help="labels per request limit (default: %(default)s)")
    parser.add_argument("--max-text-bytes", type=int, default=DEFAULTS.max_text_bytes,
                        help="TEXT size limit in UTF-8 bytes (default: %(default)s)")
    parser.add_argument("--max-labels-bytes", type=int, default=DEFAULTS.max_labels_bytes,
                        help="all candidate labels together, in UTF-8 bytes (default: %(default)s)")
    parser.add_argument("--labels-per-row", type=int, default=DEFAULTS.labels_per_row,
                        help="GLiClass checkpoints: the labels one encoder row holds beside the text (default: the "
                             "checkpoint's max_num_classes, what it was trained with); a request with more labels "
                             "takes more rows, its scores as the gliclass package's chunking pipeline gives them")
    parser.add_argument("--max-windows", type=int, default=DEFAULTS.max_windows,
                        help="a text longer than --max-length: 1 (default) truncates it, as the reference pipelines "
                             "do; N scores it as up to N overlapping windows (a quarter shared between neighbours), "
                             "each label by its best window (NLI: the highest entailment logit; embedding: the "
                             "highest cosine); a longer text is refused, naming TEXT. Each window costs one more "
                             "encoder row per label (NLI) or per text (embedding)")
    parser.add_argument("--queue-delay-us", type=int, default=DEFAULTS.queue_delay_us,
                        help="encoder dynamic batcher max queue delay in microseconds "
                             "(default: the GPU profile's, else 2000)")
    parser.add_argument("--replay-overhead-tokens", type=int, default=DEFAULTS.replay_overhead_tokens,
                        help="python-torch on a GPU: a batch runs as replays of CUDA graphs of the captured batch "
                             "sizes, chosen to minimise padded rows x tokens plus this much per replay (its fixed "
                             "cost); a large value pads each batch up to one graph (default: "
                             "%(default)s, measured on an H200)")
    parser.add_argument("--encoder-instances", type=int, default=DEFAULTS.encoder_instances,
                        help="encoder instances (default: the GPU profile's, else 1)")
    parser.add_argument("--max-queue-size", type=int, default=DEFAULTS.max_queue_size,
                        help="encoder requests allowed to wait; more are rejected at once as UNAVAILABLE "
                             "(default: %(default)s, no bound on the count: the wait budget, --queue-timeout-ms, "
                             "bounds the queue)")
    parser.add_argument("--queue-timeout-ms", default=DEFAULTS.queue_timeout_ms,
                        help="a request waiting longer in the encoder queue is rejected as busy, so that what is "
                             "answered under overload waited at most this long. auto (default): "
                             f"{QUEUE_BUDGET_BATCHES} x the encoder's time for a full batch (from its time per "
                             f"pair on a sample request, measured at export), within "
                             f"{QUEUE_BUDGET_MS[0]}-{QUEUE_BUDGET_MS[1]} ms on the CPU; "
                             f"{GPU_QUEUE_BUDGET_MS} ms with a GPU profile")
    parser.add_argument("--admission-budget-ms", default=DEFAULTS.admission_budget_ms,
                        help="admission control (zsc_server/admission.py): a valid request is refused as busy, "
                             "before it is tokenized, when the wait for the encoder that the server estimates "
                             "(the work admitted so far x the encoder's measured time per row) exceeds this "
                             "budget. auto (default, CPU): the time of "
                             f"{ADMISSION_CLOSED_LOOP_REQUESTS} sample requests, within "
                             f"{ADMISSION_BUDGET_MS[0]}-{ADMISSION_BUDGET_MS[1]} ms and half the encoder queue's "
                             "budget; off with a GPU profile; a number of ms; off")
    parser.add_argument("--preprocess-instances", type=int, default=DEFAULTS.preprocess_instances,
                        help="tokenizer model instances (default: %(default)s)")
    parser.add_argument("--cpu-cores", type=int, default=DEFAULTS.cpu_cores,
                        help="onnxruntime INT8 on CPU: cores the serving machine gives the encoder; its threads "
                             "per instance = cores / --encoder-instances (default: this machine's). python-ort "
                             "counts the cores when the server loads the model")
    parser.add_argument("--rows-per-call", type=int, default=DEFAULTS.rows_per_call,
                        help="python-ort / python-ov: the most rows one inference call takes, so that a request "
                             "with many labels runs in several calls and its activation memory stays bounded "
                             "(default: %(default)s; 0: a whole batch per call; ONNX Runtime's INT8 keeps a "
                             "request in one call)")
    parser.add_argument("--label-cache-mb", type=float, default=DEFAULTS.label_cache_mb,
                        help="embedding mode: MiB of hypothesis embeddings each preprocess instance keeps, so "
                             "that a label set is encoded once, not with every request; 0 turns the cache off "
                             "(default: %(default)s; NLI mode has no label cache)")
    parser.add_argument("--cache-dir", default=DEFAULTS.cache_dir, help="hub download cache (default: the hub's own)")
    gate = parser.add_argument_group(
        "INT8 / FP8 accuracy gate",
        f"INT8 or FP8 answers against FP32 on {agreement.DEFAULT_REQUESTS} requests (texts x label sets x templates): "
        f"fails the export when max |Δ score| > {agreement.GATE.max_abs_delta}, mean |Δ score| > "
        f"{agreement.GATE.mean_abs_delta} or top-1 agreement < {agreement.GATE.top1_agreement:.0%} (FP32 near-ties "
        f"within {agreement.TIE_MARGIN} count as agreement). Random-weight checkpoints cannot show accuracy.")
    gate.add_argument("--texts", type=Path, default=DEFAULTS.texts,
                      help="texts to check on: one per line, or a JSON file like loadtest/data/workload.json "
                           "(texts, label_sets) (default: loadtest/data/workload.json)")
    gate.add_argument("--labels", action="append", default=DEFAULTS.labels, metavar="'A,B,C'",
                      help="a label set for --texts (repeat for several; default: the JSON file's label sets, "
                           "else the workload's)")
    gate.add_argument("--gate-requests", type=int, default=DEFAULTS.gate_requests,
                      help="how many (text, label set) requests to check (default: %(default)s)")
    gate.add_argument("--accuracy-gate", choices=["enforce", "report"], default=DEFAULTS.accuracy_gate,
                      help="enforce: an INT8 or FP8 model over the limits is not exported (default); report: print "
                           "the figures and export anyway (random-weight checkpoints, whose scores are noise)")
    parser.add_argument("--validate-only", action="store_true",
                        help="steps 1-4 only (export and check the encoder, the INT8/FP8 gate included), write "
                             "nothing")
    return parser


def max_length_value(value: str) -> int | str:
    """--max-length as argparse reads it: a number of tokens, auto or model (export.options)."""
    if value in (MODEL_MAX_LENGTH, AUTO_MAX_LENGTH):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of tokens, '{AUTO_MAX_LENGTH}' or '{MODEL_MAX_LENGTH}', got "
                                         f"{value!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `docker stop` and Kubernetes stop with SIGTERM: end as Ctrl-C does, so that the temporary files (the size
    # of the model, or more) go too and the repository stays as it was
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        export_model(options_from(args))
    except (ExportError, OSError) as exc:  # OSError: the disk, the repository's file system
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"export interrupted: temporary files removed, {args.repository} as it was", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


def options_from(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(**vars(args))
