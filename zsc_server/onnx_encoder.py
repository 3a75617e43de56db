"""Run an ONNX encoder with ONNX Runtime over a dynamic batch of Triton requests.

Used by the ``python-ort`` runtime (the encoder as a Python-backend model), which
is what runs where Triton has no native ONNX Runtime backend (the pytriton wheel).
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from zsc_server.batching import merge_feeds, split_rows


class OnnxEncoder:
    def __init__(self, model_path: str, intra_op_threads: int = 0, providers: list[str] | None = None):
        options = ort.SessionOptions()
        # the cores this process may use (a server pinned with `--cpus` has fewer than the machine)
        options.intra_op_num_threads = intra_op_threads or len(os.sched_getaffinity(0))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's threads spin while they wait for work: at one request at a time they burned 8 ms of
        # CPU per request of a tiny model (measured: make bench, loadtest/server_cpu.py), CPU that the
        # tokenizer, Triton and the other instances needed. Asleep between batches, they cost nothing.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            model_path, options, providers=providers or ["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Run all requests of a dynamic batch in one call, split the outputs back per request."""
        merged, sizes = merge_feeds(feeds, self.input_names)
        outputs = self.session.run(self.output_names, merged)
        per_output = [split_rows(out, sizes) for out in outputs]
        return [
            {name: parts[i] for name, parts in zip(self.output_names, per_output)}
            for i in range(len(feeds))
        ]
