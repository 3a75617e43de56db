"""Triton Python backend: the encoder in torch (runtime `python-torch`, written by export).

The plain-torch BERT (zsc_server.torch_bert) with CUDA graphs per (batch, sequence) shape on a GPU
instance, FP32 eager on a CPU instance. Thin adapter over zsc_server.torch_encoder.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from zsc_server.encoder_model import batch_responses, string_parameters
from zsc_server.settings import REPLAY_OVERHEAD_TOKENS
from zsc_server.torch_encoder import TorchEncoder


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = string_parameters(config)
        gpu = args["model_instance_kind"] == "GPU"
        self.encoder = TorchEncoder(
            str(Path(args["model_repository"]) / args["model_version"] / "model.pt"),
            device=f"cuda:{args['model_instance_device_id']}" if gpu else "cpu",
            precision=params.get("precision", "fp16"),
            graph_batch_sizes=tuple(json.loads(params.get("graph_batch_sizes", "[]"))),
            sequence_buckets=tuple(json.loads(params.get("sequence_buckets", "[]"))),
            capture_all=params.get("capture_graphs_at_start", "true") == "true",
            replay_overhead_tokens=float(params.get("replay_overhead_tokens", REPLAY_OVERHEAD_TOKENS)),
        )
        self.input_names = [i["name"] for i in config["input"]]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        def run_batch(feeds):
            return [{self.output_name: rows} for rows in self.encoder.run_batch(feeds)]

        return batch_responses(requests, self.input_names, run_batch, pb_utils.Logger)
