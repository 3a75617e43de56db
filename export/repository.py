"""The Triton model repository's four configs: built as dicts from the export's settings, parsed into
tritonclient's ``ModelConfig`` protobuf (which rejects unknown fields and bad enums) and rendered as text.
export/repository_files.py writes them, and the files they serve, to disk."""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from zsc_server import batching_policy as policy
from zsc_server import tensor_names as names
from zsc_server.admission import AdmissionSettings
from zsc_server.encoder_limits import EncoderLimits
from zsc_server.label_cache import LabelCacheSettings
from zsc_server.settings import ENCODER_INPUTS, ScoringSettings

SOURCE_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
ENSEMBLE, PREPROCESS, ENCODER, POSTPROCESS = "zero_shot", "preprocess", "encoder", "postprocess"


class Runtime(str, enum.Enum):
    """Where the encoder runs."""

    PYTHON_ORT = "python-ort"  # ONNX Runtime inside a Python-backend model: runs with the pytriton wheel
    ONNXRUNTIME = "onnxruntime"  # native onnxruntime_onnx backend with TensorRT/CUDA accelerators (NGC)
    TENSORRT = "tensorrt"  # native tensorrt_plan backend, engine built by export/onnx2trt.py (NGC)
    PYTHON_TORCH = "python-torch"  # TorchScript on the GPU in a Python-backend model, CUDA graphs
    PYTHON_OV = "python-ov"  # OpenVINO inside a Python-backend model (CPU): FP32, or static INT8 that batches
    OPENVINO = "openvino"  # the same IR on Triton's native openvino backend (NGC images; CPU)

    @property
    def python_backend(self) -> bool:
        return self in (Runtime.PYTHON_ORT, Runtime.PYTHON_TORCH, Runtime.PYTHON_OV)

    @property
    def openvino(self) -> bool:
        """Serves an OpenVINO IR (model.xml + model.bin), converted and quantized by export/onnx2ov.py."""
        return self in (Runtime.PYTHON_OV, Runtime.OPENVINO)


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    runtime: Runtime = Runtime.PYTHON_ORT
    queue_delay_us: int = policy.CPU_QUEUE_DELAY_US
    encoder_instances: int = policy.ENCODER_INSTANCES
    preprocess_instances: int = policy.PREPROCESS_INSTANCES
    intra_op_threads: int = 0  # 0: the cores shared out among the encoder instances (CPU runtimes)
    cpu_cores: int = 0  # onnxruntime on CPU (INT8): the cores its thread count is computed for; 0: this machine's
    rows_per_call: int = policy.CPU_ROWS_PER_CALL  # python-ort / python-ov: rows per inference call (0: all)
    preferred_batch_sizes: tuple[int, ...] = ()
    max_batch: int = 0  # encoder batch (pairs) limit; 0: one request's largest (max_labels + 1)
    # Overload: a bounded encoder queue answers "busy" (UNAVAILABLE) at once instead of letting
    # latency grow without limit; a request that waited longer than the timeout is rejected too.
    max_queue_size: int = policy.MAX_QUEUE_SIZE  # no bound on the count: queue_timeout_us bounds the queue
    queue_timeout_us: int = policy.QUEUE_BUDGET_MS[1] * 1000
    precision: str = "fp32"
    # python-torch only: "gpu", or "cpu" to run the same model without CUDA (tests, CPU-only hosts)
    torch_device: str = "gpu"
    torch_layout: str = policy.DEFAULT_TORCH_LAYOUT  # python-torch only: padded rows or packed tokens
    # python-torch only: batch sizes a CUDA graph is captured for; a batch is replayed as the sizes that
    # cost least, counting each replay as its padded rows plus this overhead (zsc_server/torch_encoder.py)
    graph_batch_sizes: tuple[int, ...] = policy.GRAPH_BATCH_SIZES
    replay_overhead_tokens: int = policy.REPLAY_OVERHEAD_TOKENS
    tensorrt_profiles: int = 0  # tensorrt only: the engine's optimization profiles, one per bucket
    response_cache: bool = True
    # refuse a request, before tokenizing it, when its estimated wait exceeds a budget (zsc_server/admission.py)
    admission: AdmissionSettings = AdmissionSettings()

    @property
    def int8(self) -> bool:
        return self.precision == "int8"


def _tensor(name: str, dtype: str, dims: list[int], optional: bool = False) -> dict:
    spec = {"name": name, "data_type": dtype, "dims": dims}
    if optional:
        spec["optional"] = True
    return spec


def _params(values: dict[str, str]) -> dict:
    return {key: {"string_value": value} for key, value in values.items()}


def _encoded(names: tuple[str, ...]) -> list[dict]:
    """The preprocess' tokenized outputs: exactly the inputs the exported encoder takes."""
    return [_tensor(name, "TYPE_INT64", [-1, -1]) for name in names]


INTERNAL = [
    _tensor(names.PREPARED_LABELS, "TYPE_STRING", [-1]),
    _tensor(names.PREPARED_MULTI_LABEL, "TYPE_BOOL", [1]),
    _tensor(names.START_NS, "TYPE_INT64", [1]),
    # embedding mode with the label cache: the hypotheses' embeddings [labels, hidden]; else [0, 0]
    _tensor(names.LABEL_EMBEDDINGS, "TYPE_FP32", [-1, -1]),
]
# The launcher's warm-up (--warm-labels): label sets as JSON in, which instance encoded them out. Not ensemble
# tensors: only requests sent to the preprocess model itself carry them (zsc_server/warm_up.py).
WARM_UP_INPUT = _tensor(names.WARM_UP, "TYPE_STRING", [1], optional=True)
WARM_UP_OUTPUT = _tensor(names.WARM_UP_REPORT, "TYPE_STRING", [1])
# The ensemble's inputs and outputs share one tensor namespace, so the candidate labels
# cannot also be called LABELS (Triton then answers the input back as the output).
# TEXT and CANDIDATE_LABELS are required, but declared optional: Triton 2.51 only counts a request's
# inputs, so with one of them missing and an optional one sent it answered "unexpected deadlock";
# optional, they reach the preprocess, which names the missing one ("TEXT: is required").
REQUEST_INPUTS = [
    _tensor(names.TEXT, "TYPE_STRING", [1], optional=True),
    _tensor(names.CANDIDATE_LABELS, "TYPE_STRING", [-1], optional=True),
    _tensor(names.HYPOTHESIS_TEMPLATE, "TYPE_STRING", [1], optional=True),
    _tensor(names.MULTI_LABEL, "TYPE_BOOL", [1], optional=True),
]
RESPONSE_OUTPUTS = [
    _tensor(names.LABELS, "TYPE_STRING", [-1]),
    _tensor(names.SCORES, "TYPE_FP32", [-1]),
    _tensor(names.SERVER_LATENCY_MS, "TYPE_FP32", [1]),
]


def preprocess_config(scoring: ScoringSettings, serving: ServingSettings,
                      label_cache: LabelCacheSettings | None = None) -> dict:
    config = {
        "name": PREPROCESS,
        "backend": "python",
        "max_batch_size": 0,
        "input": REQUEST_INPUTS + [WARM_UP_INPUT],
        "output": _encoded(scoring.encoder_inputs) + INTERNAL + [WARM_UP_OUTPUT],
        "instance_group": [{"count": serving.preprocess_instances, "kind": "KIND_CPU"}],
        "parameters": _params(scoring.to_parameters() | serving.admission.to_parameters()
                              | (label_cache or LabelCacheSettings()).to_parameters()),
    }
    if serving.admission.enabled:
        # Admission control holds a request over its budget in the preprocess, waiting for room; the requests
        # behind it wait in this bounded queue, and Triton turns the excess away at once ("exceeds maximum queue
        # size", UNAVAILABLE), in C++, before any Python. No time bound: only the count is bounded.
        config["dynamic_batching"] = {"default_queue_policy": {
            "max_queue_size": serving.preprocess_instances * policy.PREPROCESS_QUEUE_PER_INSTANCE}}
    return config


def postprocess_config(scoring: ScoringSettings, serving: ServingSettings = ServingSettings()) -> dict:
    return {
        "name": POSTPROCESS,
        "backend": "python",
        "max_batch_size": 0,
        "input": [_tensor(names.ENCODER_OUTPUT, "TYPE_FP32", [-1, -1])] + INTERNAL,
        "output": RESPONSE_OUTPUTS,
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": _params(scoring.to_parameters()),
    }


def encoder_batch_rows(scoring: ScoringSettings, serving: ServingSettings) -> int:
    """The most pairs (rows) one encoder execution takes: the profile's batch, or one request's largest."""
    return max(serving.max_batch, scoring.rows_per_request)


def encoder_config(
    scoring: ScoringSettings, serving: ServingSettings, output_name: str, output_width: int,
    limits: EncoderLimits | None = None,
) -> dict:
    """limits: what the Python-backend encoders check in each request (the native backends cannot)."""
    batching = {
        "max_queue_delay_microseconds": serving.queue_delay_us,
        "default_queue_policy": {
            "max_queue_size": serving.max_queue_size,
            "timeout_action": "REJECT",
            "default_timeout_microseconds": serving.queue_timeout_us,
        },
    }
    if serving.preferred_batch_sizes:
        batching["preferred_batch_size"] = list(serving.preferred_batch_sizes)
    config = {
        "name": ENCODER,
        # Embedding mode encodes the text as one more row than there are labels.
        "max_batch_size": encoder_batch_rows(scoring, serving),
        "input": [_tensor(name, "TYPE_INT64", [-1]) for name in scoring.encoder_inputs],
        "output": [_tensor(output_name, "TYPE_FP32", [output_width])],
        "dynamic_batching": batching,
    }
    gpu = {"count": serving.encoder_instances, "kind": "KIND_GPU"}
    cpu = {"count": serving.encoder_instances, "kind": "KIND_CPU"}
    if serving.runtime.python_backend:
        # Ragged batches: requests of different sequence buckets may share an execution (the model runs
        # one call per length, zsc_server/batching.py); with equal shapes only, fine CPU buckets left the
        # batcher ~1.8 requests per execution at saturation, each execution a round trip to the stub.
        for tensor in config["input"]:
            tensor["allow_ragged_batch"] = True
    if serving.runtime in (Runtime.PYTHON_ORT, Runtime.PYTHON_OV):
        config["backend"] = "python"
        config["instance_group"] = [cpu]
        config["parameters"] = _params({
            "intra_op_threads": str(serving.intra_op_threads),
            "intra_op_threads_rule": THREADS_RULE,
            # ONNX Runtime's INT8 (dynamic quantization) scales activations per run: merged requests would
            # change each other's scores, so each request runs alone. OpenVINO's static INT8 has its scales
            # fixed at export and merges requests as FP32 does.
            "one_run_per_request": "true" if serving.int8 and serving.runtime is Runtime.PYTHON_ORT else "false",
            "rows_per_call": str(serving.rows_per_call),
        } | serving.admission.to_parameters() | (limits.to_parameters() if limits else {}))
    elif serving.runtime is Runtime.ONNXRUNTIME and serving.int8:
        return cpu_onnxruntime_config(config, serving)
    elif serving.runtime is Runtime.OPENVINO:
        config["backend"] = "openvino"
        config["instance_group"] = [cpu]
        config["parameters"] = _params(native_openvino_parameters(serving))
    elif serving.runtime is Runtime.PYTHON_TORCH:
        config["backend"] = "python"
        config["instance_group"] = [gpu if serving.torch_device == "gpu" else dict(gpu, kind="KIND_CPU")]
        config["parameters"] = _params({
            "precision": serving.precision,
            "layout": serving.torch_layout,
            "graph_batch_sizes": json.dumps(list(serving.graph_batch_sizes)),
            "replay_overhead_tokens": str(serving.replay_overhead_tokens),
            "sequence_buckets": json.dumps(list(scoring.buckets)),
        } | serving.admission.to_parameters() | (limits.to_parameters() if limits else {}))
    elif serving.runtime is Runtime.ONNXRUNTIME:
        config["platform"] = "onnxruntime_onnx"
        config["instance_group"] = [gpu]
        # TensorRT takes the subgraphs it supports (FP16 kernels); the CUDA provider runs the rest.
        # Engines are cached on disk so that a restart does not rebuild them.
        config["optimization"] = {"execution_accelerators": {"gpu_execution_accelerator": [{
            "name": "tensorrt",
            "parameters": {
                "precision_mode": "FP16" if serving.precision == "fp16" else "FP32",
                "max_workspace_size_bytes": str(4 << 30),
                "trt_engine_cache_enable": "1",
                "trt_engine_cache_path": "/tmp/zsc-ort-trt-cache",
            },
        }]}}
    else:
        config["platform"] = "tensorrt_plan"
        # Triton picks, per batch, the profile whose shapes fit it: one per sequence bucket.
        config["instance_group"] = [dict(gpu, profile=[str(i) for i in range(serving.tensorrt_profiles)])]
    return config


THREADS_RULE = ("0: the cores the server may use divided by the encoder instances, at load; a number: that many. "
                "Intra-op threads x instances <= cores: more threads than cores make the instances' thread "
                "pools preempt each other")


def export_time_threads(serving: ServingSettings) -> tuple[int, int]:
    """(threads per encoder instance, cores) for a native CPU backend, whose thread count is fixed at export."""
    from zsc_server.onnx_encoder import intra_op_threads, usable_cores

    cores = serving.cpu_cores or usable_cores()
    return intra_op_threads(serving.intra_op_threads, serving.encoder_instances, cores), cores


def native_openvino_parameters(serving: ServingSettings) -> dict[str, str]:
    """The openvino backend's parameters: one stream per instance with the latency hint (the dynamic batcher
    makes the batches), its threads fixed at export as python-ov's are at load."""
    threads, cores = export_time_threads(serving)
    return {"NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": str(threads),
            "intra_op_threads_rule": f"{threads} = {cores} cores (--cpu-cores) / {serving.encoder_instances} "
                                     "instances, at export: threads x instances <= cores"}


def cpu_onnxruntime_config(config: dict, serving: ServingSettings) -> dict:
    """INT8 on the native onnxruntime backend, on the CPU. Without a dynamic batcher: Triton then runs each
    request on its own (dynamic quantization scales activations per run, so merged requests would change
    each other's scores), which also means no bounded queue (that lives in the dynamic batcher)."""
    threads, cores = export_time_threads(serving)
    config = {key: value for key, value in config.items() if key != "dynamic_batching"}
    config["platform"] = "onnxruntime_onnx"
    config["instance_group"] = [{"count": serving.encoder_instances, "kind": "KIND_CPU"}]
    config["parameters"] = _params({
        "intra_op_thread_count": str(threads),
        "inter_op_thread_count": "1",
        "intra_op_threads_rule": f"{threads} = {cores} cores (--cpu-cores) / {serving.encoder_instances} "
                                 "instances, at export: intra-op threads x instances <= cores",
    })
    return config


def ensemble_config(encoder_output_name: str, export_info: dict[str, str] | None = None,
                    response_cache: bool = True, encoder_inputs: tuple[str, ...] = ENCODER_INPUTS) -> dict:
    def identity(names: list[str]) -> dict:
        return {name: name for name in names}

    request_names = [t["name"] for t in REQUEST_INPUTS]
    internal_names = [t["name"] for t in INTERNAL]
    return {
        "name": ENSEMBLE,
        "platform": "ensemble",
        "max_batch_size": 0,
        "input": REQUEST_INPUTS,
        "output": RESPONSE_OUTPUTS,
        # What was exported (model, precision, runtime), for load-test and benchmark reports that only
        # see the server: GET /v2/models/zero_shot/config. Triton itself ignores these.
        "parameters": _params({f"export_{key}": value for key, value in (export_info or {}).items()}),
        # The answer is a function of the request's inputs alone (text, labels, template, mode), so
        # identical requests may share it. Used only where the server has a cache (--cache-config).
        "response_cache": {"enable": response_cache},
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": PREPROCESS,
                    "model_version": -1,
                    "input_map": identity(request_names),
                    "output_map": identity(list(encoder_inputs) + internal_names),
                },
                {
                    "model_name": ENCODER,
                    "model_version": -1,
                    "input_map": identity(list(encoder_inputs)),
                    "output_map": {encoder_output_name: names.ENCODER_OUTPUT},
                },
                {
                    "model_name": POSTPROCESS,
                    "model_version": -1,
                    "input_map": identity([names.ENCODER_OUTPUT] + internal_names),
                    "output_map": identity([t["name"] for t in RESPONSE_OUTPUTS]),
                },
            ]
        },
    }


def to_pbtxt(config: dict) -> str:
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)
