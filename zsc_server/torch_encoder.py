"""Run the plain-torch BERT over a dynamic batch of Triton requests (`python-torch` runtime).

On a GPU, small batches are dominated by kernel launches (measured on an H100, StructBERT-large FP16:
about 12 ms eager vs 1.6 ms replayed from a CUDA graph for 3 pairs). So each (batch size, sequence
bucket) shape the server will see gets a CUDA graph, captured on first use (or at start with
`capture_all`): a batch is padded up to the next captured batch size, copied through pinned host memory
into the graph's static inputs, replayed, and the real rows copied back. Batches above the largest
captured size run eagerly (they are compute-bound; launches no longer matter). On the CPU (tests,
CPU-only hosts) the same model runs eagerly in FP32.
"""

from __future__ import annotations

import bisect

import numpy as np
import torch

from zsc_server.batching import run_by_sequence_length
from zsc_server.tokenization import ENCODER_INPUTS
from zsc_server.torch_bert import load_plain_bert


class _Graph:
    """One captured forward pass with its static input/output buffers."""

    def __init__(self, model, batch: int, sequence: int, device: torch.device, pool) -> None:
        self.inputs = [torch.zeros((batch, sequence), dtype=torch.int64, device=device) for _ in ENCODER_INPUTS]
        self.host = [torch.zeros((batch, sequence), dtype=torch.int64).pin_memory() for _ in ENCODER_INPUTS]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up outside the graph, as capture requires
            for _ in range(2):
                model(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = model(*self.inputs)

    def run(self, arrays: list[np.ndarray]) -> torch.Tensor:
        rows = arrays[0].shape[0]
        for host, device_buffer, array in zip(self.host, self.inputs, arrays):
            host.zero_()  # padding rows: all-zero ids and mask
            host[:rows].copy_(torch.from_numpy(array))
            device_buffer.copy_(host, non_blocking=True)
        self.graph.replay()
        return self.output[:rows]


class TorchEncoder:
    def __init__(self, model_path: str, device: str = "cuda", precision: str = "fp16",
                 graph_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128),
                 sequence_buckets: tuple[int, ...] = (), capture_all: bool = False) -> None:
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        # FP16 on the CPU is slower than FP32 and not what the GPU computes either: CPU runs FP32
        dtype = torch.float16 if precision == "fp16" and self.on_gpu else torch.float32
        self.model = load_plain_bert(model_path, device=str(self.device), dtype=dtype)
        self.graph_batch_sizes = tuple(sorted(graph_batch_sizes)) if self.on_gpu else ()
        self.graphs: dict[tuple[int, int], _Graph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.on_gpu else None
        self.input_names = list(ENCODER_INPUTS)
        if capture_all and self.on_gpu:
            with torch.inference_mode():
                for sequence in sequence_buckets:
                    for batch in self.graph_batch_sizes:
                        self._graph(batch, sequence)

    def _graph(self, batch: int, sequence: int) -> _Graph:
        key = (batch, sequence)
        if key not in self.graphs:
            self.graphs[key] = _Graph(self.model, batch, sequence, self.device, self._pool)
        return self.graphs[key]

    def forward(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Encoder inputs (input_ids, attention_mask, token_type_ids), each [rows, sequence] -> [rows, width]."""
        rows, sequence = arrays[0].shape
        with torch.inference_mode():
            slot = bisect.bisect_left(self.graph_batch_sizes, rows)
            if slot < len(self.graph_batch_sizes):
                output = self._graph(self.graph_batch_sizes[slot], sequence).run(arrays)
            else:
                output = self.model(*(torch.from_numpy(a).to(self.device, non_blocking=True) for a in arrays))
            return output.float().cpu().numpy()

    def run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """One forward pass per sequence length among the requests of a dynamic batch, split back per request."""
        per_request = run_by_sequence_length(
            feeds, self.input_names, lambda inputs: [self.forward([inputs[name] for name in self.input_names])])
        return [outputs[0] for outputs in per_request]
