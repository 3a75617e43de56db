"""Triton Python backend: the encoder on ONNX Runtime (runtime `python-ort`, written by export).

Runs every request of a dynamic batch in one ONNX Runtime call. Thin adapter over
zsc_server.onnx_encoder.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from zsc_server.encoder_model import batch_responses, string_parameters
from zsc_server.onnx_encoder import OnnxEncoder


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = string_parameters(config)
        model_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.encoder = OnnxEncoder(str(model_path), int(params.get("intra_op_threads", "0")))
        self.input_names = [i["name"] for i in config["input"]]

    def execute(self, requests):
        return batch_responses(requests, self.input_names, self.encoder.run_batch, pb_utils.Logger)
