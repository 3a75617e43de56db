"""Triton Python backend: the encoder in torch (runtime `python-torch`, written by export).

The plain-torch BERT (zsc_server.torch_bert) with CUDA graphs on a GPU instance (per (batch, sequence) shape
padded, per total-token bucket packed), FP32 eager on a CPU instance. Thin adapter over zsc_server.torch_encoder.
"""

import json
from pathlib import Path

from zsc_server.batching_policy import DEFAULT_TORCH_LAYOUT, REPLAY_OVERHEAD_TOKENS
from zsc_server.encoder_model import EncoderRequests, string_parameters
from zsc_server.torch_encoder import TorchEncoder


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = string_parameters(config)
        gpu = args["model_instance_kind"] == "GPU"
        self.encoder = TorchEncoder(
            str(Path(args["model_repository"]) / args["model_version"] / "model.pt"),
            device=f"cuda:{args['model_instance_device_id']}" if gpu else "cpu",
            precision=params["precision"],  # always written by the export
            graph_batch_sizes=tuple(json.loads(params.get("graph_batch_sizes", "[]"))),
            sequence_buckets=tuple(json.loads(params.get("sequence_buckets", "[]"))),
            capture_all=params.get("capture_graphs_at_start", "true") == "true",
            replay_overhead_tokens=float(params.get("replay_overhead_tokens", REPLAY_OVERHEAD_TOKENS)),
            layout=params.get("layout", DEFAULT_TORCH_LAYOUT),
            max_rows=int(config["max_batch_size"]),
        )
        output_name = config["output"][0]["name"]
        self.requests = EncoderRequests(
            config, lambda feeds: [{output_name: rows} for rows in self.encoder.run_batch(feeds)])

    def execute(self, requests):
        return self.requests.execute(requests)
