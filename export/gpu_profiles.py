"""Per-GPU serving profiles: `python -m export --gpu t4|a10g|l4|v100|a100|h100`.

A profile picks what a card needs from the encoder: precision, the longest sequence it serves, the
largest batch (pairs per encoder call), the batch sizes the dynamic batcher should aim for, how long it
may wait to form them, and how many encoder instances share the card.

How the numbers are derived (so they can be re-derived when a card is measured):
- The batch that saturates a card is where its FP16 throughput stops growing. Measured on the H100
  (../shared/gpu/h100-baseline.md, StructBERT-large shape, CUDA graphs): seq 64 gains little past
  batch 128 (9,806 pairs/s at 128, 9,974 at 512); the same on the H200 (11,183 at 128, 10,565 at 512:
  loadtest/results/bench-20261126-h200/memory.md). Other cards are projected by their dense FP16
  tensor throughput relative to the H100 (the same work per pair fills a slower card sooner).
- Memory: weights + activations of the largest batch at max length must fit in a fixed share of the
  card, per instance. Activation bytes per (pair, token) were measured on the H200 for every (batch,
  sequence) the profiles use (`ModelShape.activation_bytes`); they depend on the model shape, not on
  the card, so every card's memory limits rest on that measurement.
- The queue delay: measured on the H200 (loadtest/results/compare-20261126-h200-replay): at one request
  the encoder waits the whole delay (500 us: p50 5.3 ms, 100 us: 4.7 ms), while under load batches form
  anyway (100 us cost 2-5% of the saturated throughput). Slower cards are projected from it.
"""

from __future__ import annotations

import dataclasses

from export.torch2onnx import Precision
from zsc_server.batching_policy import GPU_MAX_BATCH, GPU_QUEUE_DELAY_US
from zsc_server.torch_fp8 import FP8_COMPUTE_CAPABILITY

H100_FP16_TFLOPS = 800.0  # measured: 798 TFLOP/s on an 8192^3 FP16 matmul (h100-baseline.md)
H100_SATURATION_BATCH = 128  # measured: seq 64 pairs/s within 2% of its batch-512 value at 128
MEMORY_SHARE = 0.6  # of the card, for all encoder instances; the rest: CUDA context, graphs, other models


@dataclasses.dataclass(frozen=True)
class Card:
    name: str
    memory_gib: float
    fp16_tflops: float  # dense tensor-core FP16, the vendor's figure unless marked measured
    compute_capability: tuple[int, int]
    measured: str = ""  # where this card's serving throughput was measured, if it was

    @property
    def fp8(self) -> bool:
        """FP8 tensor cores: --precision fp8 runs there (zsc_server/torch_fp8.py)."""
        return self.compute_capability >= FP8_COMPUTE_CAPABILITY


CARDS = {
    "t4": Card("NVIDIA T4", 16, 65, (7, 5)),
    "v100": Card("NVIDIA V100 16GB", 16, 125, (7, 0)),
    "a10g": Card("NVIDIA A10G", 24, 70, (8, 6)),
    "l4": Card("NVIDIA L4", 24, 121, (8, 9)),
    "a100": Card("NVIDIA A100 40GB", 40, 312, (8, 0)),
    "h100": Card("NVIDIA H100 80GB", 80, H100_FP16_TFLOPS, (9, 0), measured="h100-baseline.md"),
    # the H100's chip with 141 GB of faster memory: the same FP16 rate
    "h200": Card("NVIDIA H200", 141, H100_FP16_TFLOPS, (9, 0),
                 measured="loadtest/results/bench-20261126-h200, compare-20261126-h200-replay"),
}
# How the driver names each card (nvidia-smi's "name"), most specific first: "Tesla T4",
# "NVIDIA A100-SXM4-40GB", "NVIDIA H100 80GB HBM3", "NVIDIA A10G", ...
_NAME_TOKENS = (("h200", "h200"), ("h100", "h100"), ("a100", "a100"), ("a10g", "a10g"), ("a10", "a10g"),
                ("l4", "l4"), ("v100", "v100"), ("t4", "t4"))


def card_for(name: str, memory_mib: int) -> tuple[str, str]:
    """The profile for a GPU the driver lists, and why it was chosen (one line)."""
    words = name.lower().replace("-", " ").split()
    for token, key in _NAME_TOKENS:
        if token in words:  # whole words: an "L40S" is not an L4
            return key, f"{name} is a {key} card"
    # an unlisted card: the largest listed card whose memory fits in it (the batch limits are memory's)
    fitting = [key for key, card in CARDS.items() if card.memory_gib * 1024 <= memory_mib * 1.05]
    key = max(fitting, key=lambda k: CARDS[k].memory_gib) if fitting else "t4"
    return key, (f"{name} has no profile of its own; {key}'s is the largest whose memory "
                 f"({CARDS[key].memory_gib:g} GiB) fits in its {memory_mib / 1024:.0f} GiB")


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs from the encoder (BERT-style)."""

    hidden: int = 1024
    layers: int = 24
    heads: int = 16
    intermediate: int = 4096
    vocab: int = 21128

    def parameter_count(self) -> int:
        per_layer = 4 * self.hidden * self.hidden + 2 * self.hidden * self.intermediate
        return self.layers * per_layer + (self.vocab + 512 + 2) * self.hidden

    def activation_bytes(self, batch: int, seq: int, bytes_per_value: int = 2) -> int:
        """Peak live activations of one layer in inference (earlier layers' are freed): the residual
        stream and its Q/K/V/context copies and the FFN's intermediate. Measured on an H200 (large shape,
        FP16, batch 8-512, sequence 16-128): 20,484 bytes per (pair, token), this formula's 20,480 plus
        4; fused attention (`scaled_dot_product_attention`) never holds the scores."""
        return batch * seq * (6 * self.hidden + self.intermediate) * bytes_per_value


STRUCTBERT_LARGE = ModelShape()


@dataclasses.dataclass(frozen=True)
class GpuProfile:
    gpu: str
    card: str
    precision: Precision
    max_length: int
    max_batch: int
    preferred_batch_sizes: tuple[int, ...]
    graph_batch_sizes: tuple[int, ...]  # python-torch: CUDA graphs up to twice the saturating batch
    queue_delay_us: int
    encoder_instances: int
    basis: str

    def summary(self) -> str:
        return (f"{self.card}: {self.precision.value}, max_length {self.max_length}, max batch {self.max_batch}, "
                f"preferred {list(self.preferred_batch_sizes)}, queue delay {self.queue_delay_us} us, "
                f"{self.encoder_instances} encoder instance(s) [{self.basis}]")


def _powers_of_two(limit: int) -> tuple[int, ...]:
    sizes, size = [], 1
    while size <= limit:
        sizes.append(size)
        size *= 2
    return tuple(sizes)


def gpu_profile(gpu: str, shape: ModelShape = STRUCTBERT_LARGE, max_length: int = 128) -> GpuProfile:
    try:
        card = CARDS[gpu]
    except KeyError:
        raise ValueError(f"unknown GPU {gpu!r}; profiles exist for {', '.join(CARDS)}") from None
    # Two instances overlap one batch's host work (tokens in, scores out) with the next batch's GPU
    # work; only worth it where the GPU is fast enough for host work to show.
    instances = 2 if card.fp16_tflops >= 300 else 1
    saturation = max(8, _powers_of_two(int(H100_SATURATION_BATCH * card.fp16_tflops / H100_FP16_TFLOPS))[-1])
    budget = card.memory_gib * 2**30 * MEMORY_SHARE / instances - shape.parameter_count() * 2
    # past the saturating batch a bigger one only adds latency; 512 is as far as the H100 was measured
    max_batch = GPU_MAX_BATCH
    while max_batch > 1 and shape.activation_bytes(max_batch, max_length) > budget:
        max_batch //= 2
    # the batcher dispatches as soon as it holds a preferred size: aim at the saturating batch (and
    # half of it, so a moderate load does not wait for the full size)
    preferred = tuple(sorted({min(saturation // 2, max_batch), min(saturation, max_batch)}))
    graphs = tuple(b for b in _powers_of_two(min(2 * saturation, max_batch)))
    # 100 us measured best on the H200 for one request; a slower card takes longer per batch anyway, so
    # waiting longer to fill one costs it relatively less
    queue_delay_us = int(min(4000, GPU_QUEUE_DELAY_US * H100_FP16_TFLOPS / card.fp16_tflops))
    throughput = (f"throughput measured on this card ({card.measured})" if card.measured
                  else "projected from the H100 measurements by FP16 throughput")
    basis = f"{throughput}; memory from the activation bytes per token measured on an H200"
    return GpuProfile(gpu, card.name, Precision.FP16, max_length, max_batch, preferred, graphs, queue_delay_us,
                      instances, basis)
