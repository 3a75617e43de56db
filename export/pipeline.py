"""An export as a library function: `export_model(ExportOptions(model=...))` loads a checkpoint, exports and
validates its encoder, and writes a Triton model repository (ensemble zero_shot = preprocess -> encoder ->
postprocess). `python -m export` (export/cli.py) parses its flags into ExportOptions and calls it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from export.agreement import AccuracyGateError
from export.checkpoint import load_checkpoint
from export.encoder_artifact import encoder_artifact, encoder_inputs, ov_encoder
from export.errors import ExportError
from export.gpu_profiles import ModelShape, card_for, gpu_profile
from export.hf2torch import plain_torch_runner, require_plain_bert
from export.options import AUTO_MAX_LENGTH, GLICLASS_MAX_LENGTH, MODEL_MAX_LENGTH, PAIR_MAX_LENGTH, ExportOptions
from export.precision_checks import check_chosen, check_requested
from export.progress import step
from export.repository import (
    ENCODER,
    Runtime,
    ServingSettings,
    encoder_batch_rows,
    encoder_config,
    ensemble_config,
    postprocess_config,
    preprocess_config,
)
from export.repository_files import (
    check_writable,
    copy_static_models,
    file_digest,
    staged_repository,
    write_config,
    write_encoder_files,
)
from export.tokenizer import write_tokenizer_json
from export.torch2onnx import Precision
from export.validate import label_ranking, sample_batches
from zsc_server.admission import AdmissionSettings, parse_budget
from zsc_server.batching_policy import (
    ADMISSION_BUDGET_MS,
    ADMISSION_CLOSED_LOOP_REQUESTS,
    ADMISSION_HOLD_MS,
    ADMISSION_HOLD_SHARE,
    CPU_BUCKETS,
    CPU_QUEUE_DELAY_US,
    DEFAULT_BUCKETS,
    ENCODER_INSTANCES,
    GPU_QUEUE_BUDGET_MS,
    QUEUE_BUDGET_BATCHES,
    QUEUE_BUDGET_MS,
)
from zsc_server.gpus import describe, visible_gpus
from zsc_server.label_cache import LabelCacheSettings
from zsc_server.label_prompt import marker_in
from zsc_server.onnx_encoder import OnnxEncoder
from zsc_server.preprocess import Preprocessor
from zsc_server.scoring import InputError
from zsc_server.settings import ScoringMode, ScoringSettings, sequence_buckets
from zsc_server.tokenization import PairTokenizer

# What --gpu auto exports on a host without a GPU when neither runtime nor precision is given: the CPU setup
# that measured fastest (OpenVINO's static INT8: loadtest/results/openvino-20261206-base-2-cores and
# compare-20261206-164747-base), FP32 on the same runtime where the INT8 accuracy gate refuses the model.
FASTEST_CPU = (Runtime.PYTHON_OV, Precision.INT8)


def export_model(options: ExportOptions) -> Path:
    """Export `options.model` into `options.repository` (returned); raises ExportError, naming the problem."""
    if not options.validate_only:
        check_writable(options.repository)
    chosen = dataclasses.replace(options, gpu=choose_gpu(options.gpu, options.runtime, options.torch_device,
                                                         options.precision))
    if not (options.gpu == "auto" and chosen.gpu is None and options.runtime is None and options.precision is None):
        return export_chosen(chosen)
    runtime, precision = FASTEST_CPU
    step(1, f"no GPU profile: {runtime.value} {precision.value}, the fastest CPU setup measured, where its accuracy "
            "gate passes (else FP32); --runtime and --precision choose otherwise")
    try:
        return export_chosen(dataclasses.replace(chosen, runtime=runtime, precision=precision))
    except AccuracyGateError as exc:
        step(1, f"{exc}\n  -> exporting {runtime.value} fp32 instead")
        return export_chosen(dataclasses.replace(chosen, runtime=runtime, precision=Precision.FP32))


def export_chosen(options: ExportOptions) -> Path:
    """export_model once the GPU profile is chosen (options.gpu: a card or None)."""
    started = time.perf_counter()
    repository: Path = options.repository
    runtime = options.runtime or (Runtime.PYTHON_TORCH if options.gpu else Runtime.PYTHON_ORT)
    check_requested(options, runtime)

    step(1, f"loading {options.model}")
    ckpt = load_checkpoint(options.model, options.cache_dir, options.labels_per_row)
    if runtime is Runtime.PYTHON_TORCH:
        require_plain_bert(ckpt)
    max_length = resolved_max_length(options.max_length, ckpt)
    if max_length > ckpt.max_length_limit:
        raise ExportError(f"--max-length {max_length} exceeds what the model takes ({ckpt.max_length_limit} tokens: "
                          "its positions and its tokenizer's model_max_length)")
    step(1, f"{ckpt.layout} layout ({ckpt.model_type}) from {ckpt.directory}: {ckpt.mode.value} mode, "
            f"output {ckpt.output_name!r}, inputs {', '.join(ckpt.input_names)}")
    profile = gpu_profile(options.gpu, model_shape(ckpt), max_length) if options.gpu else None
    if profile:
        step(1, f"GPU profile {options.gpu}: {profile.summary()}")
    precision = options.precision or (profile.precision if profile else Precision.FP32)
    check_chosen(options, runtime, precision)
    max_labels = options.max_labels
    if profile and max_labels + 1 > profile.max_batch:
        max_labels = profile.max_batch - 1
        step(1, f"labels per request limited to {max_labels}: one request must fit the card's largest batch")
    try:
        scoring = ScoringSettings(
            mode=ckpt.mode, max_length=max_length, buckets=parse_buckets(options.buckets, max_length, runtime),
            default_template=ckpt.default_template if options.template is None else options.template,
            entailment_index=ckpt.entailment_index, contradiction_index=ckpt.contradiction_index,
            max_labels=max_labels, max_text_bytes=options.max_text_bytes, max_labels_bytes=options.max_labels_bytes,
            max_windows=options.max_windows, encoder_inputs=ckpt.input_names, labels_per_row=ckpt.labels_per_row,
            prompt_first=ckpt.prompt_first,
        )
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if ckpt.mode is ScoringMode.GLICLASS:
        try:
            marker_in(scoring.default_template, "--template")
        except InputError as exc:
            raise ExportError(str(exc)) from None
    serving = ServingSettings(
        runtime=runtime, precision=precision.value,
        queue_delay_us=first(options.queue_delay_us, profile and profile.queue_delay_us, CPU_QUEUE_DELAY_US),
        encoder_instances=first(options.encoder_instances, profile and profile.encoder_instances, ENCODER_INSTANCES),
        preprocess_instances=options.preprocess_instances,
        preferred_batch_sizes=profile.preferred_batch_sizes if profile else (),
        max_batch=profile.max_batch if profile else 0,
        max_queue_size=options.max_queue_size,
        torch_device=options.torch_device,
        torch_layout=options.torch_layout,
        graph_batch_sizes=profile.graph_batch_sizes if profile else ServingSettings.graph_batch_sizes,
        replay_overhead_tokens=options.replay_overhead_tokens,
        tensorrt_profiles=len(scoring.buckets) if runtime is Runtime.TENSORRT else 0,
        cpu_cores=options.cpu_cores,
        rows_per_call=options.rows_per_call,
    )
    try:
        admission_budget = parse_budget(options.admission_budget_ms)
    except ValueError:
        raise ExportError(f"--admission-budget-ms must be auto, off or a positive number, "
                          f"got {options.admission_budget_ms!r}") from None
    ranking = label_ranking(ckpt.mode, ckpt.entailment_index)
    label_cache_mib = label_cache_budget(options, ckpt.mode, precision, runtime)

    # Everything is produced and validated in a scratch dir, the repository assembled in a staging dir
    # beside the target and swapped in at the end: an export that fails or is interrupted half way leaves
    # the served repository as it was.
    with tempfile.TemporaryDirectory(prefix="zsc-export-") as tmp:
        tokenizer_path = Path(tmp) / "tokenizer.json"
        # GLiClass's reference needs transformers 5, which rebuilds some tokenizers its own way: the server
        # tokenizes as it does
        source = write_tokenizer_json(ckpt.directory, ckpt.tokenizer, tokenizer_path,
                                      as_loaded=ckpt.mode is ScoringMode.GLICLASS)
        step(2, f"tokenizer: {source}")
        if ckpt.mode is ScoringMode.GLICLASS:  # its rows as the preprocess makes them (no windows for GLiClass)
            batches = sample_batches(Preprocessor(scoring, tokenizer_path), pairs=False)
        else:
            try:
                tokenizer = PairTokenizer(tokenizer_path, scoring.max_length, scoring.buckets, scoring.max_windows)
            except ValueError as exc:  # windows with a tokenizer layout the preprocess cannot cut
                raise ExportError(f"--max-windows {scoring.max_windows}: {exc}") from None
            batches = sample_batches(tokenizer, pairs=ckpt.mode is ScoringMode.NLI)

        artifact, report = encoder_artifact(options, runtime, precision, ckpt, scoring, profile, batches, ranking,
                                            Path(tmp))
        sample = measure_sample(options, profile, runtime, artifact, batches[0])
        budget_ms = queue_budget_ms(options, sample, encoder_batch_rows(scoring, serving))
        admission = admission_settings(admission_budget, sample, budget_ms, serving.encoder_instances, runtime)
        step(4, f"admission control: {admission.describe()}")
        serving = dataclasses.replace(serving, queue_timeout_us=budget_ms * 1000, admission=admission)
        # The preprocess sends, and the ensemble passes, exactly the inputs the exported encoder declares.
        scoring = dataclasses.replace(scoring, encoder_inputs=encoder_inputs(artifact, runtime, ckpt),
                                      max_rows=encoder_batch_rows(scoring, serving))
        # the cached label vectors belong to this encoder file: its hash names them
        label_cache = LabelCacheSettings.from_mib(label_cache_mib, export_id=file_digest(artifact),
                                                  encoder_model=ENCODER, encoder_output=ckpt.output_name)
        if options.validate_only:
            print(f"[export] validated in {time.perf_counter() - started:.1f}s; --validate-only: nothing written",
                  flush=True)
            return repository
        with staged_repository(repository) as staging:
            step(5, f"writing {runtime.value} repository to {repository}/")
            copy_static_models(staging)
            shutil.copyfile(tokenizer_path, staging / "preprocess" / "1" / "tokenizer.json")
            version_dir = write_encoder_files(staging, runtime, artifact)
            info = {
                "source": options.model, "layout": ckpt.layout, "model_type": ckpt.model_type, "mode": ckpt.mode.value,
                "encoder_inputs": list(scoring.encoder_inputs), "default_template": scoring.default_template,
                "precision": precision.value, "runtime": runtime.value, "gpu_profile": options.gpu or "",
                "max_length": scoring.max_length, "buckets": list(scoring.buckets),
                "validation_max_abs_diff": report.max_abs_diff,
                "validation_label_order_agreement": report.order_agreement,
                "export_id": label_cache.export_id, "label_cache_bytes": label_cache.budget_bytes,
                "shape": dataclasses.asdict(model_shape(ckpt)),
            }
            if report.accuracy_gate:
                info[f"{report.accuracy_gate['precision']}_agreement"] = report.accuracy_gate
            for config in (
                preprocess_config(scoring, serving, label_cache),
                encoder_config(scoring, serving, ckpt.output_name, _output_width(ckpt),
                               ckpt.encoder_limits(scoring.max_length)),
                postprocess_config(scoring, serving),
                ensemble_config(ckpt.output_name, served_export_info(options.model, info),
                                encoder_inputs=scoring.encoder_inputs),
            ):
                print(f"    {repository / write_config(staging, config).relative_to(staging)}")
            (version_dir.parent / "export.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    print(f"[export] done in {time.perf_counter() - started:.1f}s: serve it with `make serve`", flush=True)
    return repository


def resolved_max_length(max_length: int | str, ckpt) -> int:
    """--max-length as a number of tokens (export.options says what auto and model mean)."""
    if max_length == MODEL_MAX_LENGTH:
        return ckpt.max_length_limit
    if max_length == AUTO_MAX_LENGTH:
        return (min(ckpt.max_length_limit, GLICLASS_MAX_LENGTH) if ckpt.mode is ScoringMode.GLICLASS
                else PAIR_MAX_LENGTH)
    return int(max_length)


def queue_budget_from_sample(service_ms: float, rows: int, batch_rows: int) -> tuple[int, float]:
    """(budget ms, a full batch's estimated ms) from the encoder's time for `rows` pairs."""
    full_batch_ms = service_ms / rows * batch_rows
    return int(min(QUEUE_BUDGET_MS[1], max(QUEUE_BUDGET_MS[0], QUEUE_BUDGET_BATCHES * full_batch_ms))), full_batch_ms


@dataclasses.dataclass(frozen=True)
class SampleTiming:
    """The encoder's time for one sample request on the exporting machine (the median of 5 runs)."""
    ms: float
    rows: int

    @property
    def row_ms(self) -> float:
        return self.ms / self.rows


def measure_sample(options: ExportOptions, profile, runtime: Runtime, artifact: Path, batch) -> SampleTiming | None:
    """Time the exported encoder on one sample request, on the CPU runtimes; None on a GPU, where the time of a
    request says little about a batch's (and the measurement would need the GPU at export)."""
    if profile or runtime is Runtime.TENSORRT or (runtime is Runtime.PYTHON_TORCH and options.torch_device == "gpu"):
        return None
    if runtime is Runtime.PYTHON_TORCH:
        run, feeds = plain_torch_runner(artifact, options.torch_layout), batch.as_dict()
    else:
        encoder = ov_encoder(artifact) if runtime.openvino else OnnxEncoder(str(artifact))
        feeds = batch.as_dict(tuple(encoder.input_names))

        def run(inputs):
            return encoder.run_batch([inputs])
    run(feeds)  # warm-up
    times = []
    for _ in range(5):
        started = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - started) * 1e3)
    return SampleTiming(sorted(times)[2], feeds["input_ids"].shape[0])


def queue_budget_ms(options: ExportOptions, sample: SampleTiming | None, batch_rows: int) -> int:
    """--queue-timeout-ms: as given, or `auto`: QUEUE_BUDGET_BATCHES full batches of `batch_rows` pairs at the
    encoder's measured time per pair on one sample request (CPU time grows with the pairs)."""
    if options.queue_timeout_ms != "auto":  # a whole number of ms: ExportOptions checked it
        return int(options.queue_timeout_ms)
    if sample is None:
        step(4, f"encoder queue budget: {GPU_QUEUE_BUDGET_MS} ms (GPU)")
        return GPU_QUEUE_BUDGET_MS
    budget, full_batch_ms = queue_budget_from_sample(sample.ms, sample.rows, batch_rows)
    step(4, f"encoder queue budget: {budget} ms ({QUEUE_BUDGET_BATCHES} x {full_batch_ms:.0f} ms for a full batch of "
            f"{batch_rows} pairs: {sample.ms:.1f} ms for the {sample.rows} pairs of a sample request here, within "
            f"{QUEUE_BUDGET_MS[0]}-{QUEUE_BUDGET_MS[1]} ms)")
    return budget


def admission_settings(budget: float | str | None, sample: SampleTiming | None, queue_budget_ms: int,
                       encoder_instances: int, runtime: Runtime) -> AdmissionSettings:
    """--admission-budget-ms resolved: `auto` is ADMISSION_CLOSED_LOOP_REQUESTS sample requests' time within
    ADMISSION_BUDGET_MS and at most half the encoder queue's budget; off without a CPU measurement (GPU). Only the
    Python-backend encoders report their executions, which the admission ledger needs to strike rows off."""
    if budget is not None and not runtime.python_backend:
        if budget == "auto":
            return AdmissionSettings()
        raise ExportError(f"--admission-budget-ms needs an encoder that reports its executions (python-ort, "
                          f"python-ov, python-torch); --runtime {runtime.value} has none: use "
                          "--admission-budget-ms off")
    if budget is None or (budget == "auto" and sample is None):
        return AdmissionSettings()
    if budget == "auto":
        low, high = ADMISSION_BUDGET_MS
        closed_loop_ms = ADMISSION_CLOSED_LOOP_REQUESTS * sample.ms
        budget = max(1, round(min(queue_budget_ms / 2, max(low, min(high, closed_loop_ms)))))
    # without a measurement (a number given for a GPU export), the estimate starts small and follows the encoder
    return AdmissionSettings(float(budget), sample.row_ms if sample else 0.01, encoder_instances,
                             forget_ms=queue_budget_ms + float(budget),
                             hold_ms=min(ADMISSION_HOLD_MS, ADMISSION_HOLD_SHARE * float(budget)))


def label_cache_budget(options: ExportOptions, mode: ScoringMode, precision: Precision, runtime: Runtime) -> float:
    """MiB per preprocess instance for the label cache: 0 in NLI mode, which cannot reuse label vectors, and
    with ONNX Runtime's INT8, whose vectors depend on the run that computed them."""
    if mode is not ScoringMode.EMBEDDING:
        step(1, f"label cache: none in {'NLI' if mode is ScoringMode.NLI else 'GLiClass'} mode (each text is "
                "encoded together with its labels)")
        return 0.0
    if precision is Precision.INT8 and not runtime.openvino and options.label_cache_mb:
        # dynamic quantization scales activations per run: a label's vector computed alone (a cache miss) is
        # not the one computed beside the request's text, so cached and uncached answers would differ
        step(1, "label cache: off with ONNX Runtime's INT8 (a vector's quantization depends on the run that "
                "computed it; --runtime python-ov quantizes statically and keeps it)")
        return 0.0
    step(1, f"label cache: {options.label_cache_mb:g} MiB per preprocess instance" if options.label_cache_mb
         else "label cache: off (--label-cache-mb 0)")
    return options.label_cache_mb


def choose_gpu(requested: str | None, runtime: Runtime | None, torch_device: str,
               precision: Precision | None = None) -> str | None:
    """The GPU profile to export with: the one asked for, or with `auto` the visible GPU's (None: CPU)."""
    if requested != "auto":
        return None if requested in (None, "none") else requested
    gpus = visible_gpus()
    if not gpus:
        step(1, "no GPU visible (nvidia-smi): exporting for the CPU; --gpu CARD exports for a card elsewhere")
        return None
    cpu_only = (f"--runtime {runtime.value}" if runtime in (Runtime.PYTHON_ORT, Runtime.PYTHON_OV, Runtime.OPENVINO)
                else "--torch-device cpu" if torch_device == "cpu"
                else "--precision int8" if precision is Precision.INT8 else None)
    if cpu_only:
        step(1, f"{describe(gpus)} visible, but the encoder was asked to run on the CPU ({cpu_only}): "
                "no GPU profile")
        return None
    card, why = card_for(gpus[0].name, gpus[0].memory_mib)
    step(1, f"{describe(gpus)} visible: GPU profile {card} ({why}), runtime {(runtime or Runtime.PYTHON_TORCH).value}"
            "; --gpu none exports for the CPU instead")
    return card


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
        candidates = CPU_BUCKETS if runtime in (Runtime.PYTHON_ORT, Runtime.PYTHON_OV) else DEFAULT_BUCKETS
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
    return {key: json.dumps(shown[key]) if isinstance(shown[key], dict) else str(shown[key])
            for key in ("source", "precision", "runtime", "mode", "max_length", "shape")}


def _output_width(ckpt) -> int:
    if ckpt.mode is ScoringMode.GLICLASS:
        return ckpt.labels_per_row
    if ckpt.mode is ScoringMode.NLI:
        return int(ckpt.module.model.config.num_labels)
    return int(ckpt.module.model.config.hidden_size)
