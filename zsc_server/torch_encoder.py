"""Run the plain-torch BERT over a dynamic batch of Triton requests (`python-torch` runtime).

Two layouts. *padded* (the default): each (batch size, sequence bucket) shape the server will see gets a CUDA
graph (zsc_server.cuda_graphs), captured on first use (or at start with `capture_all`). A batch runs as one
or more replays of captured sizes (`replay_plan`): padding a batch of 143 rows up to the 256-row graph
computes 113 rows for nothing, while 128 + 16 pads one row for the price of one more replay. *packed*: the
batch's rows, of every request and length, end to end without padding (zsc_server.packing), one CUDA graph
per total-token bucket (zsc_server.torch_packed). On the CPU (tests, CPU-only hosts) the same model runs
eagerly in FP32, through the same plans.
"""

from __future__ import annotations

import numpy as np
import torch

from zsc_server.batching import run_by_sequence_length
from zsc_server.batching_policy import DEFAULT_TORCH_LAYOUT, REPLAY_OVERHEAD_TOKENS, TORCH_LAYOUTS
from zsc_server.cuda_graphs import CapturedForward, replay_in_turn
from zsc_server.tokenization import ENCODER_INPUTS
from zsc_server.torch_bert import load_plain_bert
from zsc_server.torch_fp8 import check_fp8_device, to_fp8
from zsc_server.torch_packed import PackedRunner, check_packed_precision


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


# export.torch2onnx.Precision's values that python-torch serves (zsc_server imports nothing of export/)
PRECISIONS = ("fp32", "fp16", "fp8")


def load_for_serving(model_path: str, device: torch.device, precision: str):
    """The plain-torch BERT as `precision` runs it on `device`. The CPU computes FP32 (FP16 there is slower, and
    not what a GPU computes either), with FP8's products emulated for fp8 (zsc_server.torch_fp8)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    on_gpu = device.type == "cuda"
    if precision == "fp8" and on_gpu:
        check_fp8_device(device)
    dtype = {"fp16": torch.float16, "fp8": torch.bfloat16}.get(precision, torch.float32) if on_gpu else torch.float32
    if precision == "fp8":
        return to_fp8(load_plain_bert(model_path, device=str(device), dtype=torch.float32), dtype)
    return load_plain_bert(model_path, device=str(device), dtype=dtype)


class TorchEncoder:
    def __init__(self, model_path: str, device: str = "cuda", precision: str = "fp16",
                 graph_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128),
                 sequence_buckets: tuple[int, ...] = (), capture_all: bool = False,
                 replay_overhead_tokens: float = REPLAY_OVERHEAD_TOKENS, layout: str = DEFAULT_TORCH_LAYOUT,
                 max_rows: int = 0) -> None:
        """`max_rows`: the most rows one dynamic batch holds (the config's max_batch_size; packed layout)."""
        if layout not in TORCH_LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(TORCH_LAYOUTS)}, got {layout!r}")
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        if layout == "packed":
            check_packed_precision(precision, self.on_gpu)
        self.model = load_for_serving(model_path, self.device, precision)
        self.graph_batch_sizes = tuple(sorted(graph_batch_sizes)) if self.on_gpu else ()
        self.graphs: dict[tuple[int, int], CapturedForward] = {}
        self.replay_overhead_tokens = replay_overhead_tokens
        self._choices: dict[int, list[int]] = {}  # per sequence length, from replay_choices
        self._pool = torch.cuda.graph_pool_handle() if self.on_gpu else None
        self.input_names = list(ENCODER_INPUTS)
        self.packed = (PackedRunner(self.model, self.device, max_rows or max(graph_batch_sizes),
                                    max(sequence_buckets, default=self.model.shape.max_position_embeddings),
                                    self._pool) if layout == "packed" else None)
        if capture_all and self.on_gpu:
            with torch.inference_mode():
                if self.packed:
                    self.packed.capture_all()
                    return
                for sequence in sequence_buckets:
                    for batch in self.graph_batch_sizes:
                        self._graph(batch, sequence)

    def _graph(self, batch: int, sequence: int) -> CapturedForward:
        key = (batch, sequence)
        if key not in self.graphs:
            # the warm-up runs on rows of padding only, which the model keeps finite
            initial = [np.zeros((batch, sequence), dtype=np.int64) for _ in ENCODER_INPUTS]
            self.graphs[key] = CapturedForward(self.model, initial, self.device, self._pool)
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
            runs, start = [], 0
            for size in self.plan(rows, sequence):
                chunk = [a[start:start + size] for a in arrays]
                padded = [np.pad(a, ((0, size - len(a)), (0, 0))) for a in chunk]  # padding rows: all zeros
                runs.append((self._graph(size, sequence), padded, len(chunk[0])))
                start += size
            return replay_in_turn(runs, self.device).cpu().numpy()

    def run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """The encoder's outputs for each request of a dynamic batch: in the packed layout all rows together,
        in the padded one a forward pass per sequence length among the requests."""
        if self.packed:
            return self.packed.run_batch([[feed[name] for name in self.input_names] for feed in feeds])
        per_request = run_by_sequence_length(
            feeds, self.input_names, lambda inputs: [self.forward([inputs[name] for name in self.input_names])])
        return [outputs[0] for outputs in per_request]
