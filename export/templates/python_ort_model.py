"""Triton Python backend: the encoder on ONNX Runtime (runtime `python-ort`, written by export).

Runs the valid requests of a dynamic batch in one ONNX Runtime call (INT8: one call per request). Thin adapter
over zsc_server.onnx_encoder; the config's parameters say how many threads and why.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from zsc_server.encoder_model import EncoderRequests, string_parameters
from zsc_server.onnx_encoder import OnnxEncoder, instance_threads, usable_cores


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = string_parameters(config)
        model_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        threads, instances = instance_threads(config, params.get("intra_op_threads", "0"))
        self.encoder = OnnxEncoder(str(model_path), threads,
                                   one_run_per_request=params.get("one_run_per_request") == "true",
                                   rows_per_call=int(params.get("rows_per_call", "0")))
        pb_utils.Logger.log_info(f"encoder: ONNX Runtime, {threads} intra-op threads per instance "
                                 f"({usable_cores()} cores, {instances} instances), one run per request: "
                                 f"{self.encoder.one_run_per_request}, rows per call: "
                                 f"{self.encoder.rows_per_call or 'all'}")
        self.requests = EncoderRequests(config, self.encoder.run_batch)

    def execute(self, requests):
        return self.requests.execute(requests)
