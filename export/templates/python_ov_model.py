"""Triton Python backend: the encoder on OpenVINO (runtime `python-ov`, written by export).

Runs the valid requests of a dynamic batch merged, one OpenVINO call per sequence length, FP32 or static INT8
alike. Thin adapter over zsc_server.ov_encoder; the config's parameters say how many threads and why.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from zsc_server.encoder_model import EncoderRequests, string_parameters
from zsc_server.onnx_encoder import instance_threads, usable_cores
from zsc_server.ov_encoder import OvEncoder


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = string_parameters(config)
        model_path = Path(args["model_repository"]) / args["model_version"] / "model.xml"
        threads, instances = instance_threads(config, params.get("intra_op_threads", "0"))
        self.encoder = OvEncoder(str(model_path), threads, int(params.get("rows_per_call", "0")))
        pb_utils.Logger.log_info(f"encoder: OpenVINO, {threads} threads per instance ({usable_cores()} cores, "
                                 f"{instances} instances), rows per call: {self.encoder.rows_per_call or 'all'}")
        self.requests = EncoderRequests(config, self.encoder.run_batch)

    def execute(self, requests):
        return self.requests.execute(requests)
