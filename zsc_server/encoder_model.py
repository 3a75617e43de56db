"""The body of the encoder's Python-backend models (python-ort, python-torch): the runtimes differ only
in how they turn a dynamic batch of requests into outputs (importable only inside Triton)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import triton_python_backend_utils as pb_utils

from zsc_server.admission import AdmissionGate, AdmissionSettings
from zsc_server.encoder_limits import EncoderLimits, check_request
from zsc_server.scoring import InputError
from zsc_server.throttled_log import ThrottledLog
from zsc_server.triton_adapter import error_response, optional_input

RunBatch = Callable[[list[dict[str, np.ndarray]]], list[dict[str, np.ndarray]]]


class EncoderRequests:
    """Answers a dynamic batch: every request checked on its own (zsc_server.encoder_limits), the valid ones
    run together in one `run_batch` call. If that call fails anyway, each of them runs alone, so that
    only the request at fault gets the error. Each execution's rows and time go to admission control, whose
    estimate of the wait follows them (zsc_server.admission)."""

    def __init__(self, model_config: dict, run_batch: RunBatch) -> None:
        self.input_names = [tensor["name"] for tensor in model_config["input"]]
        self.limits = EncoderLimits.from_parameters(string_parameters(model_config))
        self.run_batch = run_batch
        self.logger = pb_utils.Logger
        self.log_refusal = ThrottledLog(self.logger.log_warn)
        self.gate = AdmissionGate.for_server(AdmissionSettings.from_model_config(model_config))

    def execute(self, requests) -> list:
        responses: list = [None] * len(requests)
        valid: dict[int, dict[str, np.ndarray]] = {}
        for index, request in enumerate(requests):
            try:
                valid[index] = check_request(
                    {name: optional_input(request, name) for name in self.input_names}, self.limits)
            except InputError as exc:
                self.log_refusal(f"encoder: refused a request: {exc}")
                responses[index] = error_response(exc, self.logger)
        if valid:
            started = time.perf_counter()
            for index, response in zip(valid, self._run(list(valid.values()))):
                responses[index] = response
            if self.gate:
                rows = sum(next(iter(feed.values())).shape[0] for feed in valid.values())
                self.gate.executed(rows, time.perf_counter() - started)
        return responses

    def _run(self, feeds: list[dict[str, np.ndarray]]) -> list:
        try:
            return [_response(result) for result in self.run_batch(feeds)]
        except Exception as exc:  # noqa: BLE001 - answer every request of the batch
            if len(feeds) == 1:
                return [error_response(exc, self.logger)]
        return [response for feed in feeds for response in self._run([feed])]


def _response(result: dict[str, np.ndarray]):
    return pb_utils.InferenceResponse(
        output_tensors=[pb_utils.Tensor(name, value) for name, value in result.items()])


def string_parameters(model_config: dict) -> dict[str, str]:
    return {key: value["string_value"] for key, value in model_config.get("parameters", {}).items()}
