"""The body of the encoder's Python-backend models (python-ort, python-torch): the runtimes differ only
in how they turn a dynamic batch of requests into outputs (importable only inside Triton)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils

from zsc_server.triton_adapter import error_response

RunBatch = Callable[[list[dict[str, np.ndarray]]], list[dict[str, np.ndarray]]]


def batch_responses(requests, input_names: list[str], run_batch: RunBatch, logger) -> list:
    """All requests of the batch in one `run_batch` call; a failure answers every one of them."""
    try:
        feeds = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in input_names}
            for request in requests
        ]
        results = run_batch(feeds)
    except Exception as exc:  # noqa: BLE001 - answer every request of the batch
        return [error_response(exc, logger) for _ in requests]
    return [
        pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(name, value) for name, value in result.items()])
        for result in results
    ]


def string_parameters(model_config: dict) -> dict[str, str]:
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}
