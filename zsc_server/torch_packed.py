"""The `python-torch` runtime's packed layout: every row of a dynamic batch, whatever its request or length,
end to end in one token stream (zsc_server.packing), run by PlainBert.forward_packed.

On a GPU each total-token bucket has a CUDA graph; a batch is cut into consecutive groups that fill the largest
bucket (only the last group is padded, to the smallest bucket that holds it), each group replayed once. The
attention kernel gets the longest sequence the server sends as its bound, so one graph serves every mix of
lengths. On the CPU the same groups run eagerly.
"""

from __future__ import annotations

import numpy as np
import torch

from zsc_server.batching_policy import PACKED_TOKEN_LIMIT, SMALLEST_TOKEN_BUCKET
from zsc_server.cuda_graphs import CapturedForward, replay_in_turn
from zsc_server.packing import PackedBatch, Rows, bucket_for, chunks, pack, token_buckets


def check_packed_precision(precision: str, on_gpu: bool) -> None:
    """The packed layout's attention on a GPU, FlashAttention's variable-length kernel, takes FP16 or BF16 (what
    fp16 and fp8 run in), not FP32; on a CPU it runs per sequence in FP32."""
    if on_gpu and precision == "fp32":
        raise ValueError("the packed layout's attention (FlashAttention's variable-length kernel) takes FP16 or "
                         "BF16 on a GPU, not FP32: --precision fp16 or fp8, or --torch-layout padded")


class PackedRunner:
    def __init__(self, model, device: torch.device, max_rows: int, max_seqlen: int, pool,
                 token_limit: int = PACKED_TOKEN_LIMIT) -> None:
        """`max_rows`: the most rows one batch holds; `max_seqlen`: the longest sequence the preprocess makes."""
        self.model, self.device, self.pool = model, device, pool
        self.max_rows, self.max_seqlen = max_rows, max_seqlen
        self.buckets = token_buckets(max(min(token_limit, max_rows * max_seqlen), max_seqlen),
                                     min(SMALLEST_TOKEN_BUCKET, max_seqlen))
        self.graphs: dict[int, CapturedForward] = {}
        if device.type == "cuda":
            try:
                from torch.nn.attention.varlen import varlen_attn  # noqa: F401
            except ImportError:
                raise ValueError(f"the packed layout needs torch 2.10 or later on a GPU (torch.nn.attention.varlen); "
                                 f"this is torch {torch.__version__}: export --torch-layout padded") from None

    def slots(self, bucket: int) -> int:
        """Sequence slots of a bucket's graph: every row of a batch, but never more than one per token."""
        return min(self.max_rows, bucket)

    def capture_all(self) -> None:
        for bucket in self.buckets:
            self._graph(bucket)

    def _graph(self, bucket: int) -> CapturedForward:
        if bucket not in self.graphs:
            # the warm-up runs on padding only: no sequence, every token's attention zeroed
            initial = pack(Rows.of([]), bucket, self.slots(bucket)).arrays()
            self.graphs[bucket] = CapturedForward(
                lambda *inputs: self.model.forward_packed(*inputs, self.max_seqlen), initial, self.device, self.pool)
        return self.graphs[bucket]

    def batches(self, rows: Rows) -> list[PackedBatch]:
        """`rows` cut into packed batches that each fit a bucket."""
        lengths = rows.lengths.tolist()
        if max(lengths, default=0) > self.max_seqlen:  # the attention kernel's bound, fixed in the graphs
            raise ValueError(f"a row of {max(lengths)} tokens exceeds the packed layout's {self.max_seqlen}")
        packed = []
        for group in chunks(lengths, self.buckets[-1], self.max_rows):
            bucket = bucket_for(sum(lengths[group.start:group.stop]), self.buckets)
            packed.append(pack(rows.take(group), bucket, self.slots(bucket)))
        return packed

    def run_batch(self, feeds: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Each request's (input_ids, attention_mask, token_type_ids) [rows, width] -> its [rows, outputs]."""
        with torch.inference_mode():
            batches = self.batches(Rows.of([tuple(feed) for feed in feeds]))
            if not batches:  # requests of no rows
                return [np.zeros((ids.shape[0], self.model.output_width), np.float32) for ids, _, _ in feeds]
            if self.device.type == "cuda":
                outputs = replay_in_turn(((self._graph(len(b.input_ids)), b.arrays(), b.sequences) for b in batches),
                                         self.device)
            else:
                outputs = torch.cat([self.model.forward_packed(*map(torch.from_numpy, b.arrays()),
                                                               b.max_seqlen)[:b.sequences] for b in batches])
        split = np.cumsum([ids.shape[0] for ids, _, _ in feeds])[:-1]
        return np.split(outputs.float().cpu().numpy(), split)
