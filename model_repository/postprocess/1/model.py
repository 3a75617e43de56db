"""Triton Python backend: encoder output -> labels sorted by score (NLI or cosine scoring).

Embedding mode with the label cache: the encoder output is the text's embedding and `label_embeddings` the
hypotheses' (from the preprocess's cache); without it, `label_embeddings` has 0 rows.

Thin adapter over zsc_server.postprocess; settings come from this model's config.pbtxt parameters.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from zsc_server import tensor_names as names
from zsc_server.postprocess import score_labels
from zsc_server.scoring import InputError, decode_utf8
from zsc_server.settings import ScoringSettings
from zsc_server.throttled_log import ThrottledLog
from zsc_server.triton_adapter import bytes_tensor, error_response, required_input


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.settings = ScoringSettings.from_model_config(config)
        self.logger = pb_utils.Logger
        self.log_refusal = ThrottledLog(self.logger.log_warn)  # only a direct caller's mistakes reach it

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        try:
            labels, scores = score_labels(
                self.settings,
                required_input(request, names.ENCODER_OUTPUT),
                [decode_utf8(raw, names.PREPARED_LABELS)
                 for raw in required_input(request, names.PREPARED_LABELS).reshape(-1)],
                bool(required_input(request, names.PREPARED_MULTI_LABEL).reshape(-1)[0]),
                required_input(request, names.LABEL_EMBEDDINGS),
            )
            start_ns = int(required_input(request, names.START_NS).reshape(-1)[0])
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            if isinstance(exc, InputError):
                self.log_refusal(f"postprocess: refused a request: {exc}")
            return error_response(exc, self.logger)
        latency_ms = (time.monotonic_ns() - start_ns) / 1e6
        return pb_utils.InferenceResponse(
            output_tensors=[
                bytes_tensor(names.LABELS, labels),
                pb_utils.Tensor(names.SCORES, scores.astype(np.float32)),
                pb_utils.Tensor(names.SERVER_LATENCY_MS, np.array([latency_ms], dtype=np.float32)),
            ]
        )
