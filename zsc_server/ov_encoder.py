"""Run an OpenVINO encoder (IR: model.xml + model.bin) over a dynamic batch of Triton requests.

Used by the ``python-ov`` runtime, FP32 or static INT8 (export/ov_quantize.py). Static INT8 has its scales fixed
at export, so a request's answer does not depend on what it was batched with: the requests of a dynamic batch
run merged, one call per sequence length, as FP32 does.

Compile settings, for CPU serving:
- inference precision f32 for the FP32 model: on CPUs with AMX or AVX512-BF16 OpenVINO would otherwise run it
  in bf16, and its answers would no longer be the checkpoint's;
- threads = the cores this process may use ÷ encoder instances (zsc_server.onnx_encoder's rule), one stream,
  latency hint: one request at a time gets every thread of its instance.
"""

from __future__ import annotations

import numpy as np
import openvino as ov

from zsc_server.batching import run_by_sequence_length
from zsc_server.onnx_encoder import usable_cores


class OvEncoder:
    def __init__(self, model_path: str, threads: int = 0, rows_per_call: int = 0) -> None:
        core = ov.Core()
        model = core.read_model(model_path)
        self.threads = threads or usable_cores()
        self.compiled = core.compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        })
        self.request = self.compiled.create_infer_request()
        self.rows_per_call = rows_per_call
        self.input_names = [port.get_any_name() for port in model.inputs]
        self.output_names = [port.get_any_name() for port in model.outputs]

    def _run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(inputs)
        return [np.array(results[self.compiled.output(name)]) for name in self.output_names]

    def run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """A dynamic batch in one call per sequence length, outputs split back per request."""
        per_request = run_by_sequence_length(feeds, self.input_names, self._run, self.rows_per_call)
        return [dict(zip(self.output_names, outputs)) for outputs in per_request]
