"""Run the plain-torch BERT over a dynamic batch of Triton requests (`python-torch` runtime).

On a GPU, small batches are dominated by kernel launches (measured on an H100, StructBERT-large FP16:
about 12 ms eager vs 1.6 ms replayed from a CUDA graph for 3 pairs). So each (batch size, sequence
bucket) shape the server will see gets a CUDA graph, captured on first use (or at start with
`capture_all`). A batch runs as one or more replays of captured sizes (`replay_plan`): padding a batch
of 143 rows up to the 256-row graph computes 113 rows for nothing, while 128 + 16 pads one row for the
price of one more replay. Inputs are copied through pinned host memory into the graph's static inputs
and the real rows copied back. On the CPU (tests, CPU-only hosts) the same model runs eagerly in FP32.
"""

from __future__ import annotations

import numpy as np
import torch

from zsc_server.batching import run_by_sequence_length
from zsc_server.batching_policy import REPLAY_OVERHEAD_TOKENS
from zsc_server.tokenization import ENCODER_INPUTS
from zsc_server.torch_bert import load_plain_bert


def replay_choices(rows: int, sizes: tuple[int, ...], overhead_rows: float) -> list[int]:
    """For every batch of 0..`rows` rows, the captured size to replay first in the plan of least cost,
    counting each replay as its size (padding included) plus `overhead_rows` (dynamic programming)."""
    if not sizes:
        raise ValueError("a replay plan needs at least one captured batch size")
    cost, choice = [0.0] * (rows + 1), [0] * (rows + 1)
    for remaining in range(1, rows + 1):
        # ties go to the larger size first: the same cost, the padded replay last
        cost[remaining], largest_first = min(
            (size + overhead_rows + cost[max(0, remaining - size)], -size) for size in sizes)
        choice[remaining] = -largest_first
    return choice


def replay_plan(rows: int, choices: list[int]) -> list[int]:
    """The sizes to replay, in order, for `rows` rows (`choices` from replay_choices, at least rows + 1
    long): every replay full but the last, which may be padded."""
    plan = []
    while rows > 0:
        plan.append(choices[rows])
        rows -= choices[rows]
    return plan


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
                 sequence_buckets: tuple[int, ...] = (), capture_all: bool = False,
                 replay_overhead_tokens: float = REPLAY_OVERHEAD_TOKENS) -> None:
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        # FP16 on the CPU is slower than FP32 and not what the GPU computes either: CPU runs FP32
        dtype = torch.float16 if precision == "fp16" and self.on_gpu else torch.float32
        self.model = load_plain_bert(model_path, device=str(self.device), dtype=dtype)
        self.graph_batch_sizes = tuple(sorted(graph_batch_sizes)) if self.on_gpu else ()
        self.graphs: dict[tuple[int, int], _Graph] = {}
        self.replay_overhead_tokens = replay_overhead_tokens
        self._choices: dict[int, list[int]] = {}  # per sequence length, from replay_choices
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

    def plan(self, rows: int, sequence: int) -> list[int]:
        """The captured sizes a batch of `rows` rows of `sequence` tokens is replayed as."""
        choices = self._choices.get(sequence, [])
        if rows >= len(choices):  # computed once per sequence length, up to the largest batch seen
            choices = replay_choices(max(rows, 2 * self.graph_batch_sizes[-1]), self.graph_batch_sizes,
                                     self.replay_overhead_tokens / sequence)
            self._choices[sequence] = choices
        return replay_plan(rows, choices)

    def forward(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Encoder inputs (input_ids, attention_mask, token_type_ids), each [rows, sequence] -> [rows, width]."""
        rows, sequence = arrays[0].shape
        with torch.inference_mode():
            if not self.graph_batch_sizes:  # eager: on the CPU, or with no graphs asked for
                inputs = (torch.from_numpy(a).to(self.device, non_blocking=True) for a in arrays)
                return self.model(*inputs).float().cpu().numpy()
            outputs, replayed, start = [], set(), 0
            for size in self.plan(rows, sequence):
                if size in replayed:  # its pinned inputs may still be copying to the GPU: wait before refilling
                    torch.cuda.current_stream(self.device).synchronize()
                chunk = [a[start:start + size] for a in arrays]
                # a copy, queued before the next replay of this graph can overwrite its static output
                outputs.append(self._graph(size, sequence).run(chunk).to(torch.float32, copy=True))
                replayed.add(size)
                start += size
            return torch.cat(outputs).cpu().numpy()

    def run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """One forward pass per sequence length among the requests of a dynamic batch, split back per request."""
        per_request = run_by_sequence_length(
            feeds, self.input_names, lambda inputs: [self.forward([inputs[name] for name in self.input_names])])
        return [outputs[0] for outputs in per_request]
