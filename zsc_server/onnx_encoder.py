"""Run an ONNX encoder with ONNX Runtime over a dynamic batch of Triton requests.

Used by the ``python-ort`` runtime (the encoder as a Python-backend model), which
is what runs where Triton has no native ONNX Runtime backend (the pytriton wheel).

Session settings, for CPU serving:
- intra-op threads = the cores this process may use ÷ encoder instances (at least 1), unless set:
  each instance is its own process with its own thread pool, and more threads in all than cores makes
  the pools preempt each other (every instance slows down, latency turns erratic);
- inter-op threads 1, sequential execution: a BERT graph is one chain of ops, parallel only inside them.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from zsc_server.batching import run_by_sequence_length


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: a container's or taskset's limit), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def intra_op_threads(requested: int, instances: int, cores: int) -> int:
    """`requested` when set (> 0); else the cores shared out among the instances, at least one each."""
    if requested > 0:
        return requested
    return max(1, cores // max(1, instances))


def instance_threads(config: dict, requested: str) -> tuple[int, int]:
    """(threads per instance, instances) for a CPU encoder model's config (its instance groups) and its
    `intra_op_threads` parameter (`requested`; "0": share the cores out)."""
    instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
    return intra_op_threads(int(requested), instances, usable_cores()), instances


class OnnxEncoder:
    """`one_run_per_request`: run each request of a dynamic batch on its own. INT8 models need it: ONNX
    Runtime's dynamic quantization scales activations per tensor, so in a merged batch one request's
    values (and the padding to the longest request) would change another request's scores."""

    def __init__(self, model_path: str, intra_op_threads: int = 0, providers: list[str] | None = None,
                 one_run_per_request: bool = False, rows_per_call: int = 0):
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or usable_cores()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's threads spin while they wait for work: at one request at a time they burned 8 ms of
        # CPU per request of a tiny model (measured: make bench, loadtest/server.py), CPU that the
        # tokenizer, Triton and the other instances needed. Asleep between batches, they cost nothing.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            model_path, options, providers=providers or ["CPUExecutionProvider"]
        )
        self.threads = options.intra_op_num_threads
        self.one_run_per_request = one_run_per_request
        # a request that runs alone keeps its rows in one call: dynamic INT8 scales them together
        self.rows_per_call = 0 if one_run_per_request else rows_per_call
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """A dynamic batch in one call per sequence length (or one call per request), outputs split back per
        request."""
        if self.one_run_per_request and len(feeds) > 1:
            return [result for feed in feeds for result in self.run_batch([feed])]
        per_request = run_by_sequence_length(
            feeds, self.input_names, lambda inputs: self.session.run(self.output_names, inputs), self.rows_per_call)
        return [dict(zip(self.output_names, outputs)) for outputs in per_request]
