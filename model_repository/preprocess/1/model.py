"""Triton Python backend: validate the request, template the labels, tokenize (text, hypothesis) pairs.

Thin adapter over zsc_server.preprocess; settings come from this model's config.pbtxt parameters.
Embedding mode with a label cache (zsc_server.label_cache): only the text goes on to the ensemble's
encoder step; the hypotheses' embeddings come from this instance's cache, the ones it lacks from one BLS
call to the encoder, and go to the postprocess as `label_embeddings`.
"""

import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from zsc_server import tensor_names as names
from zsc_server.admin_api import request_is_admin
from zsc_server.admission import AdmissionGate, AdmissionSettings
from zsc_server.label_cache import LabelCache, LabelCacheSettings
from zsc_server.preprocess import Preprocessor
from zsc_server.scoring import InputError
from zsc_server.settings import ScoringMode, ScoringSettings
from zsc_server.triton_adapter import busy_response, bytes_tensor, error_response, optional_input, required_input
from zsc_server.warm_labels import warm_cache

NO_LABEL_EMBEDDINGS = np.zeros((0, 0), dtype=np.float32)  # cache off, or NLI: the encoder step has them all


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        settings = ScoringSettings.from_model_config(config)
        cache = LabelCacheSettings.from_model_config(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.instance_name, self.logger = args["model_instance_name"], pb_utils.Logger
        self.cache = self.metrics = None
        if cache.budget_bytes and settings.mode is ScoringMode.EMBEDDING:
            from zsc_server.cache_metrics import CacheMetrics
            from zsc_server.encoder_call import EncoderCall

            self.cache = LabelCache(cache.budget_bytes, cache.export_id)
            self.encoder = EncoderCall(cache.encoder_model, cache.encoder_output, settings.encoder_inputs)
            self.metrics = CacheMetrics(args["model_name"], self.instance_name)
            self.metrics.publish(self.cache)
            self.logger.log_info(f"{self.instance_name}: label cache of {cache.budget_bytes} bytes "
                                 f"for export {cache.export_id[:12]}")
        self.preprocessor = Preprocessor(settings, version_dir / "tokenizer.json",
                                         cached_hypotheses=self.cache is not None)
        self.gate = AdmissionGate.for_server(AdmissionSettings.from_model_config(config))

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def finalize(self):
        if self.metrics is not None:
            self.metrics.close()
        if self.gate:
            self.gate.close()

    def _one(self, request):
        if pb_utils.get_input_tensor_by_name(request, names.WARM_UP) is not None:
            return self._warm_up(request)
        start_ns = time.monotonic_ns()
        try:
            template = optional_input(request, names.HYPOTHESIS_TEMPLATE)
            multi_label = optional_input(request, names.MULTI_LABEL)
            checked = self.preprocessor.check(
                text=required_input(request, names.TEXT).reshape(-1)[0],
                labels=list(required_input(request, names.CANDIDATE_LABELS).reshape(-1)),
                template=None if template is None else template.reshape(-1)[0],
                multi_label=None if multi_label is None else bool(multi_label.reshape(-1)[0]),
            )
            # valid, not tokenized yet: a refused request costs no tokenization (zsc_server/admission.py)
            booked = self.preprocessor.encoder_rows(checked)
            refusal = self.gate.admit(booked) if self.gate else None
            if refusal:
                return busy_response(refusal)
            prepared = self.preprocessor.encode(checked)
            if self.gate and prepared.encoded.input_ids.shape[0] > booked:  # a long text's windows
                self.gate.charge(prepared.encoded.input_ids.shape[0] - booked)
            label_embeddings = self._label_embeddings(prepared.hypotheses)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            return error_response(exc, self.logger)
        encoded = prepared.encoded.as_dict(self.preprocessor.settings.encoder_inputs)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, array) for name, array in encoded.items()]
            + [
                bytes_tensor(names.PREPARED_LABELS, prepared.labels),
                pb_utils.Tensor(names.PREPARED_MULTI_LABEL, np.array([prepared.multi_label], dtype=np.bool_)),
                pb_utils.Tensor(names.START_NS, np.array([start_ns], dtype=np.int64)),
                pb_utils.Tensor(names.LABEL_EMBEDDINGS, label_embeddings),
            ]
        )

    def _label_embeddings(self, hypotheses: list[str]) -> np.ndarray:
        if self.cache is None:
            return NO_LABEL_EMBEDDINGS
        try:
            return self.cache.embeddings(hypotheses, self._encode)
        finally:
            self.metrics.publish(self.cache)

    def _encode(self, hypotheses: list[str]) -> np.ndarray:
        if self.gate:
            self.gate.charge(len(hypotheses))  # the cache's misses: encoder work admission did not count
        return self.encoder(self.preprocessor.encode_hypotheses(hypotheses))

    def _warm_up(self, request):
        """The launcher's warm-up (zsc_server.warm_up): encode the label sets it sends into this instance's
        cache and say which instance this is; a set the server would refuse as a request is reported, the
        others are still encoded."""
        try:
            if not request_is_admin(request.parameters()):
                raise InputError(names.WARM_UP, "is the launcher's own input (zsc_server.warm_up), taken only with "
                                            "the server's secret")
            if self.cache is None:
                raise InputError(names.WARM_UP, "this model has no label cache (NLI mode, or --label-cache-mb 0)")
            report = warm_cache(required_input(request, names.WARM_UP).reshape(-1)[0], self.preprocessor.prepare,
                                self.cache, self._label_embeddings)
        except Exception as exc:  # noqa: BLE001 - every failure becomes this request's error
            return error_response(exc, self.logger)
        report["instance"] = self.instance_name
        return pb_utils.InferenceResponse(output_tensors=[bytes_tensor(names.WARM_UP_REPORT, [json.dumps(report)])])
