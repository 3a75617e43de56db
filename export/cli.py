"""``python -m export``: checkpoint -> ONNX (validated against PyTorch) -> Triton model repository."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from export.checkpoint import OFFLINE_ALIASES, load_checkpoint
from export.errors import ExportError
from export.repository import (
    Runtime,
    ServingSettings,
    copy_static_models,
    encoder_config,
    ensemble_config,
    postprocess_config,
    preprocess_config,
    write_config,
    write_encoder_files,
)
from export.tokenizer import write_tokenizer_json
from export.torch2onnx import Precision, export_onnx
from export.validate import sample_batches, validate_onnx
from zsc_server.settings import CPU_BUCKETS, DEFAULT_BUCKETS, ScoringMode, ScoringSettings, sequence_buckets
from zsc_server.tokenization import PairTokenizer

STEPS = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a zero-shot classifier to a Triton model repository: "
        "ensemble zero_shot = preprocess (tokenize) -> encoder (ONNX) -> postprocess (scores).",
        epilog="examples:\n"
        "  python -m export --model offline-minilm            # bundled all-MiniLM-L6-v2, offline\n"
        "  python -m export --model damo/nlp_structbert_zero-shot-classification_chinese-base\n"
        "  python -m export --model ./my-structbert --max-length 256 --runtime onnxruntime",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", required=True,
        help="checkpoint directory (ModelScope, Hugging Face or sentence-transformers layout), hub id "
        f"(damo/... from ModelScope, others from Hugging Face), or an offline alias: {', '.join(OFFLINE_ALIASES)}",
    )
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="model repository to write (default: %(default)s)")
    parser.add_argument("--precision", type=Precision, choices=list(Precision), default=Precision.FP32,
                        help="encoder weights precision (default: fp32)")
    parser.add_argument("--runtime", type=Runtime, choices=list(Runtime), default=Runtime.PYTHON_ORT,
                        help="python-ort: ONNX Runtime in a Python-backend model (runs with the pytriton "
                        "wheel, CPU); onnxruntime: native onnxruntime_onnx backend (NGC container)")
    parser.add_argument("--max-length", type=int, default=128,
                        help="max tokens per (text, hypothesis) pair; the text is truncated first (default: 128)")
    parser.add_argument("--buckets", default="auto",
                        help="padded sequence lengths, e.g. 16,32,64 (max length is always the last); "
                             "auto: fine steps for python-ort (CPU), 16/32/64/... for GPU runtimes")
    parser.add_argument("--template", default="{}",
                        help="default hypothesis template, must contain {} (default: '{}', as ModelScope)")
    parser.add_argument("--max-labels", type=int, default=256, help="labels per request limit (default: 256)")
    parser.add_argument("--max-text-bytes", type=int, default=65536,
                        help="TEXT size limit in UTF-8 bytes (default: 65536)")
    parser.add_argument("--queue-delay-us", type=int, default=2000,
                        help="encoder dynamic batcher max queue delay in microseconds (default: 2000)")
    parser.add_argument("--encoder-instances", type=int, default=1, help="encoder instances (default: 1)")
    parser.add_argument("--preprocess-instances", type=int, default=2,
                        help="tokenizer model instances (default: 2)")
    parser.add_argument("--cache-dir", default=None, help="hub download cache (default: the hub's own)")
    return parser


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

    step(1, f"loading {args.model}")
    ckpt = load_checkpoint(args.model, args.cache_dir)
    if args.max_length > ckpt.max_position_embeddings:
        raise ExportError(f"--max-length {args.max_length} exceeds the model's "
                          f"max_position_embeddings ({ckpt.max_position_embeddings})")
    step(1, f"{ckpt.layout} layout from {ckpt.directory}: {ckpt.mode.value} mode, output {ckpt.output_name!r}")
    try:
        scoring = ScoringSettings(
            mode=ckpt.mode, max_length=args.max_length, buckets=parse_buckets(args.buckets, args),
            default_template=args.template,
            entailment_index=ckpt.entailment_index, contradiction_index=ckpt.contradiction_index,
            max_labels=args.max_labels, max_text_bytes=args.max_text_bytes,
        )
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    serving = ServingSettings(
        runtime=args.runtime, queue_delay_us=args.queue_delay_us,
        encoder_instances=args.encoder_instances, preprocess_instances=args.preprocess_instances,
    )

    # Everything is produced and validated in a scratch dir first: a failed export leaves the
    # repository as it was.
    with tempfile.TemporaryDirectory(prefix="zsc-export-") as tmp:
        tokenizer_path = Path(tmp) / "tokenizer.json"
        step(2, f"tokenizer: {write_tokenizer_json(ckpt.directory, ckpt.lowercase, tokenizer_path)}")

        onnx_path = Path(tmp) / "model.onnx"
        step(3, f"exporting ONNX ({args.precision.value}, opset 17, dynamic batch_size/sequence_length)")
        export_onnx(ckpt.module, ckpt.output_name, onnx_path, args.precision)
        step(3, f"wrote {onnx_path.stat().st_size / 1e6:.1f} MB")

        step(4, "validating ONNX Runtime against PyTorch on sample inputs")
        tokenizer = PairTokenizer(tokenizer_path, scoring.max_length, scoring.buckets)
        batches = sample_batches(tokenizer, pairs=ckpt.mode is ScoringMode.NLI)
        report = validate_onnx(ckpt.module, onnx_path, ckpt.output_name, batches, args.precision)
        step(4, str(report))

        step(5, f"writing {args.runtime.value} repository to {repository}/")
        copy_static_models(repository)
        shutil.copyfile(tokenizer_path, repository / "preprocess" / "1" / "tokenizer.json")
        version_dir = write_encoder_files(repository, args.runtime, onnx_path)
    info = {
        "source": args.model, "layout": ckpt.layout, "mode": ckpt.mode.value,
        "precision": args.precision.value, "runtime": args.runtime.value,
        "max_length": scoring.max_length, "buckets": list(scoring.buckets),
        "validation_max_abs_diff": report.max_abs_diff,
    }
    for config in (
        preprocess_config(scoring, serving),
        encoder_config(scoring, serving, ckpt.output_name, _output_width(ckpt)),
        postprocess_config(scoring),
        ensemble_config(ckpt.output_name, served_export_info(args.model, info)),
    ):
        print(f"    {write_config(repository, config)}")
    (version_dir.parent / "export.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    print(f"[export] done in {time.perf_counter() - started:.1f}s: serve it with `make serve`", flush=True)


def parse_buckets(spec: str, args: argparse.Namespace) -> tuple[int, ...]:
    if spec == "auto":
        candidates = CPU_BUCKETS if args.runtime is Runtime.PYTHON_ORT else DEFAULT_BUCKETS
    else:
        try:
            candidates = tuple(int(part) for part in spec.split(",") if part.strip())
        except ValueError:
            raise ExportError(f"--buckets must be 'auto' or comma-separated lengths, got {spec!r}") from None
    return sequence_buckets(args.max_length, candidates)


def served_export_info(model: str, info: dict) -> dict[str, str]:
    """The export facts the served config carries; a local checkpoint by its folder name only, so
    the server does not publish paths of the machine that exported it."""
    shown = dict(info, source=Path(model).name if Path(model).exists() else model)
    return {key: str(shown[key]) for key in ("source", "precision", "runtime", "mode", "max_length")}


def _output_width(ckpt) -> int:
    if ckpt.mode is ScoringMode.NLI:
        return int(ckpt.module.model.config.num_labels)
    return int(ckpt.module.model.config.hidden_size)
