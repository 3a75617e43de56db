"""Write the Triton model repository: the four config.pbtxt files, tokenizer, encoder files.

Configs are built as dicts, parsed into tritonclient's ``ModelConfig`` protobuf
(which rejects unknown fields and bad enums) and written as text.
"""

from __future__ import annotations

import dataclasses
import enum
import shutil
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from zsc_server.settings import ScoringSettings
from zsc_server.tokenization import ENCODER_INPUTS

SOURCE_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
TEMPLATES = Path(__file__).resolve().parent / "templates"
ENSEMBLE, PREPROCESS, ENCODER, POSTPROCESS = "zero_shot", "preprocess", "encoder", "postprocess"


class Runtime(str, enum.Enum):
    """Where the encoder runs. tensorrt and python-torch (GPU) are planned (GPU issue)."""

    PYTHON_ORT = "python-ort"  # ONNX Runtime inside a Python-backend model: runs with the pytriton wheel
    ONNXRUNTIME = "onnxruntime"  # Triton's native onnxruntime_onnx backend (NGC container)


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    runtime: Runtime = Runtime.PYTHON_ORT
    queue_delay_us: int = 2000
    encoder_instances: int = 1
    preprocess_instances: int = 2
    intra_op_threads: int = 0  # 0: one per CPU core


def _tensor(name: str, dtype: str, dims: list[int], optional: bool = False) -> dict:
    spec = {"name": name, "data_type": dtype, "dims": dims}
    if optional:
        spec["optional"] = True
    return spec


def _params(values: dict[str, str]) -> dict:
    return {key: {"string_value": value} for key, value in values.items()}


ENCODED = [_tensor(name, "TYPE_INT64", [-1, -1]) for name in ENCODER_INPUTS]
INTERNAL = [
    _tensor("labels", "TYPE_STRING", [-1]),
    _tensor("multi_label", "TYPE_BOOL", [1]),
    _tensor("start_ns", "TYPE_INT64", [1]),
]
# The ensemble's inputs and outputs share one tensor namespace, so the candidate labels
# cannot also be called LABELS (Triton then answers the input back as the output).
REQUEST_INPUTS = [
    _tensor("TEXT", "TYPE_STRING", [1]),
    _tensor("CANDIDATE_LABELS", "TYPE_STRING", [-1]),
    _tensor("HYPOTHESIS_TEMPLATE", "TYPE_STRING", [1], optional=True),
    _tensor("MULTI_LABEL", "TYPE_BOOL", [1], optional=True),
]
RESPONSE_OUTPUTS = [
    _tensor("LABELS", "TYPE_STRING", [-1]),
    _tensor("SCORES", "TYPE_FP32", [-1]),
    _tensor("SERVER_LATENCY_MS", "TYPE_FP32", [1]),
]


def preprocess_config(scoring: ScoringSettings, serving: ServingSettings) -> dict:
    return {
        "name": PREPROCESS,
        "backend": "python",
        "max_batch_size": 0,
        "input": REQUEST_INPUTS,
        "output": ENCODED + INTERNAL,
        "instance_group": [{"count": serving.preprocess_instances, "kind": "KIND_CPU"}],
        "parameters": _params(scoring.to_parameters()),
    }


def postprocess_config(scoring: ScoringSettings) -> dict:
    return {
        "name": POSTPROCESS,
        "backend": "python",
        "max_batch_size": 0,
        "input": [_tensor("encoder_output", "TYPE_FP32", [-1, -1])] + INTERNAL,
        "output": RESPONSE_OUTPUTS,
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": _params(scoring.to_parameters()),
    }


def encoder_config(
    scoring: ScoringSettings, serving: ServingSettings, output_name: str, output_width: int
) -> dict:
    config = {
        "name": ENCODER,
        # Embedding mode encodes the text as one more row than there are labels.
        "max_batch_size": scoring.max_labels + 1,
        "input": [_tensor(name, "TYPE_INT64", [-1]) for name in ENCODER_INPUTS],
        "output": [_tensor(output_name, "TYPE_FP32", [output_width])],
        "dynamic_batching": {"max_queue_delay_microseconds": serving.queue_delay_us},
    }
    if serving.runtime is Runtime.PYTHON_ORT:
        config["backend"] = "python"
        config["instance_group"] = [{"count": serving.encoder_instances, "kind": "KIND_CPU"}]
        config["parameters"] = _params({"intra_op_threads": str(serving.intra_op_threads)})
    else:
        config["platform"] = "onnxruntime_onnx"
        config["instance_group"] = [{"count": serving.encoder_instances, "kind": "KIND_GPU"}]
    return config


def ensemble_config(encoder_output_name: str, export_info: dict[str, str] | None = None) -> dict:
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
        "ensemble_scheduling": {
            "step": [
                {
                    "model_name": PREPROCESS,
                    "model_version": -1,
                    "input_map": identity(request_names),
                    "output_map": identity(list(ENCODER_INPUTS) + internal_names),
                },
                {
                    "model_name": ENCODER,
                    "model_version": -1,
                    "input_map": identity(list(ENCODER_INPUTS)),
                    "output_map": {encoder_output_name: "encoder_output"},
                },
                {
                    "model_name": POSTPROCESS,
                    "model_version": -1,
                    "input_map": identity(["encoder_output"] + internal_names),
                    "output_map": identity([t["name"] for t in RESPONSE_OUTPUTS]),
                },
            ]
        },
    }


def to_pbtxt(config: dict) -> str:
    message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    return text_format.MessageToString(message)


def write_config(repository: Path, config: dict) -> Path:
    path = repository / config["name"] / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_pbtxt(config), encoding="utf-8")
    return path


def copy_static_models(repository: Path) -> None:
    """The committed Python models, when exporting somewhere other than the source repository."""
    for model in (PREPROCESS, POSTPROCESS):
        target = repository / model / "1" / "model.py"
        source = SOURCE_REPOSITORY / model / "1" / "model.py"
        if target.resolve() != source.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    (repository / ENSEMBLE / "1").mkdir(parents=True, exist_ok=True)


def write_encoder_files(repository: Path, runtime: Runtime, onnx_path: Path) -> Path:
    """Place model.onnx (and the Python-backend wrapper for python-ort) in encoder/1/."""
    version_dir = repository / ENCODER / "1"
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    shutil.move(str(onnx_path), version_dir / "model.onnx")
    if runtime is Runtime.PYTHON_ORT:
        shutil.copyfile(TEMPLATES / "python_ort_model.py", version_dir / "model.py")
    return version_dir
