"""Triton Python backend: validate the request, template the labels, tokenize (text, hypothesis) pairs.

Thin adapter over zsc_server.preprocess; settings come from this model's config.pbtxt parameters.
"""

import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from zsc_server.admission import AdmissionGate, AdmissionSettings
from zsc_server.preprocess import Preprocessor
from zsc_server.settings import ScoringSettings
from zsc_server.triton_adapter import busy_response, bytes_tensor, error_response, optional_input, required_input


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        settings = ScoringSettings.from_model_config(config)
        tokenizer_json = Path(args["model_repository"]) / args["model_version"] / "tokenizer.json"
        self.preprocessor = Preprocessor(settings, tokenizer_json)
        self.gate = AdmissionGate.for_server(AdmissionSettings.from_model_config(config))
        self.logger = pb_utils.Logger

    def finalize(self):
        if self.gate:
            self.gate.close()

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        start_ns = time.monotonic_ns()
        refusal = self.gate.admit(start_ns) if self.gate else None
        if refusal:  # before reading a single input: a refused request costs no tokenization
            return busy_response(refusal)
        try:
            template = optional_input(request, "HYPOTHESIS_TEMPLATE")
            multi_label = optional_input(request, "MULTI_LABEL")
            prepared = self.preprocessor.prepare(
                text=required_input(request, "TEXT").reshape(-1)[0],
                labels=list(required_input(request, "CANDIDATE_LABELS").reshape(-1)),
                template=None if template is None else template.reshape(-1)[0],
                multi_label=None if multi_label is None else bool(multi_label.reshape(-1)[0]),
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            return error_response(exc, self.logger)
        encoded = prepared.encoded.as_dict(self.preprocessor.settings.encoder_inputs)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, array) for name, array in encoded.items()]
            + [
                bytes_tensor("labels", prepared.labels),
                pb_utils.Tensor("multi_label", np.array([prepared.multi_label], dtype=np.bool_)),
                pb_utils.Tensor("start_ns", np.array([start_ns], dtype=np.int64)),
            ]
        )
