"""Triton Python backend: the encoder on ONNX Runtime (runtime `python-ort`, written by export).

Runs every request of a dynamic batch in one ONNX Runtime call. Thin adapter over
zsc_server.onnx_encoder.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from zsc_server.onnx_encoder import OnnxEncoder
from zsc_server.triton_adapter import error_response


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        model_path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.encoder = OnnxEncoder(str(model_path), int(params.get("intra_op_threads", "0")))
        self.input_names = [i["name"] for i in config["input"]]
        self.logger = pb_utils.Logger

    def execute(self, requests):
        try:
            feeds = [
                {name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_names}
                for r in requests
            ]
            results = self.encoder.run_batch(feeds)
        except Exception as exc:  # noqa: BLE001 - answer every request of the batch
            return [error_response(exc, self.logger) for _ in requests]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, value) for name, value in result.items()]
            )
            for result in results
        ]
