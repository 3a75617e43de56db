"""Hypothesis embeddings kept between requests (embedding mode): an LRU bounded by bytes.

In embedding mode a label's score is the cosine of the text's embedding and the hypothesis's
(template + label), and a hypothesis's embedding depends on nothing but its exact string and the
encoder. A fixed label set (咨询, 投诉, 建议 every day) therefore needs encoding once, not once per
request: `LabelCache.embeddings` returns the cached vectors and asks `encode` only for the
hypotheses it lacks, all of them in one call.

Each cache belongs to one export (`export_id`, a hash of the encoder file, written at export into the
preprocess config): it lives in one preprocess process, which serves one loaded export, so keys are
the hypothesis strings alone and a new export starts with new processes and empty caches.

No Triton import here: the preprocess model calls the encoder (BLS) and publishes the counters.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

# Per entry besides the key's str object and the vector's ndarray (header + data): the dict slot and
# the order link of the OrderedDict (measured with tracemalloc: ~30 bytes; rounded up).
ENTRY_OVERHEAD_BYTES = 64
MIB = 1 << 20


@dataclasses.dataclass
class CacheCounters:
    """Since the cache was made. hits: hypotheses answered without encoding; misses: hypotheses
    encoded (each distinct one once per request); evictions: entries dropped for room."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0


def entry_bytes(hypothesis: str, vector: np.ndarray) -> int:
    """What one entry holds in memory: the key's str object, the ndarray (header and data), the slot."""
    return sys.getsizeof(hypothesis) + sys.getsizeof(vector) + ENTRY_OVERHEAD_BYTES


class LabelCache:
    def __init__(self, budget_bytes: int, export_id: str = "") -> None:
        if budget_bytes <= 0:
            raise ValueError(f"a label cache needs a positive budget, got {budget_bytes} bytes")
        self.budget_bytes, self.export_id = budget_bytes, export_id
        self.counters = CacheCounters()
        self.bytes_held = 0
        self._entries: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, hypothesis: str) -> bool:
        return hypothesis in self._entries

    def embeddings(self, hypotheses: list[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """FP32 [len(hypotheses), hidden], row i the embedding of hypotheses[i]. `encode(missing)` gets
        the distinct hypotheses not cached, in first-seen order, once; it returns their embeddings as rows.
        Whatever `encode` raises propagates and nothing is counted or stored."""
        entries = self._entries
        missing = list(dict.fromkeys(h for h in hypotheses if h not in entries))
        fresh: dict[str, np.ndarray] = {}
        if missing:
            encoded = np.asarray(encode(missing), dtype=np.float32)
            if encoded.ndim != 2 or encoded.shape[0] != len(missing):
                raise ValueError(f"the encoder returned shape {encoded.shape} for {len(missing)} hypotheses")
            # copies: a row view would keep the whole batch array alive, unaccounted
            fresh = {h: np.array(row) for h, row in zip(missing, encoded)}
        rows = []
        for hypothesis in hypotheses:
            vector = fresh.get(hypothesis)
            if vector is None:
                vector = entries[hypothesis][0]
                entries.move_to_end(hypothesis)
            rows.append(vector)
        self.counters.misses += len(missing)
        self.counters.hits += len(hypotheses) - len(missing)
        # stored after the rows are taken: a request larger than the budget still gets all its vectors
        for hypothesis, vector in fresh.items():
            self._put(hypothesis, vector)
        return np.stack(rows)

    def _put(self, hypothesis: str, vector: np.ndarray) -> None:
        size = entry_bytes(hypothesis, vector)
        if size > self.budget_bytes:
            return  # could never fit: not stored, nothing evicted for it
        while self.bytes_held + size > self.budget_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes_held -= dropped
            self.counters.evictions += 1
        self._entries[hypothesis] = (vector, size)
        self.bytes_held += size


# LABEL_CACHE_MIB (zsc_server.batching_policy) per preprocess instance: ~19,000 MiniLM hypotheses, ~10,000 of a
# BERT-base


@dataclasses.dataclass(frozen=True)
class LabelCacheSettings:
    """What the preprocess needs for the cache, written by export into its config parameters: the budget
    per instance (0: no cache, today's path), the export it belongs to, and the encoder to call for misses."""

    budget_bytes: int = 0
    export_id: str = ""
    encoder_model: str = "encoder"
    encoder_output: str = "sentence_embedding"

    PREFIX = "label_cache_"

    def __post_init__(self) -> None:
        if self.budget_bytes < 0:
            raise ValueError(f"the label cache budget cannot be negative: {self.budget_bytes} bytes")

    @classmethod
    def from_mib(cls, budget_mib: float, **kwargs) -> LabelCacheSettings:
        return cls(budget_bytes=int(budget_mib * MIB), **kwargs)

    def to_parameters(self) -> dict[str, str]:
        return {self.PREFIX + field.name: str(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_model_config(cls, model_config: dict) -> LabelCacheSettings:
        params = {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}
        kwargs = {}
        for field in dataclasses.fields(cls):
            raw = params.get(cls.PREFIX + field.name)
            if raw is not None:
                kwargs[field.name] = int(raw) if field.type in ("int", int) else raw
        return cls(**kwargs)
