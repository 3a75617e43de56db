"""Run an ONNX encoder with ONNX Runtime over a dynamic batch of Triton requests.

Used by the ``python-ort`` runtime (the encoder as a Python-backend model), which
is what runs where Triton has no native ONNX Runtime backend (the pytriton wheel).
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort


class OnnxEncoder:
    def __init__(self, model_path: str, intra_op_threads: int = 0, providers: list[str] | None = None):
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or (os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            model_path, options, providers=providers or ["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """Concatenate the requests' rows, run once, split the outputs back per request.

        Requests are right-padded to the longest sequence among them; padding with
        attention_mask 0 does not change a row's result.
        """
        seq_len = max(feed[self.input_names[0]].shape[1] for feed in feeds)
        merged = {
            name: np.concatenate([_pad_to(feed[name], seq_len) for feed in feeds], axis=0)
            for name in self.input_names
        }
        outputs = self.session.run(self.output_names, merged)
        sizes = [feed[self.input_names[0]].shape[0] for feed in feeds]
        bounds = np.cumsum(sizes)[:-1]
        per_output = [np.split(out, bounds, axis=0) for out in outputs]
        return [
            {name: parts[i] for name, parts in zip(self.output_names, per_output)}
            for i in range(len(feeds))
        ]


def _pad_to(array: np.ndarray, seq_len: int) -> np.ndarray:
    if array.shape[1] == seq_len:
        return array
    return np.pad(array, ((0, 0), (0, seq_len - array.shape[1])))
