"""Packed tokens for the `python-torch` runtime's packed layout: a dynamic batch's sequences end to end, no
padding rows or columns, so that a batch costs its real tokens, not its rows x the longest.

A CUDA graph replays fixed shapes, so a packed batch is padded to a captured total-token size (a *token
bucket*) and to a fixed number of sequence slots: the extra tokens form no sequence (their attention output is
zeroed and their slot index points past the last slot), the extra slots are empty sequences (cu_seqlens repeats
the total). One graph per token bucket then serves every mix of lengths and row counts that fits it.

Plain numpy, no torch: the batch is built on the host and copied into the graph's static inputs.
"""

from __future__ import annotations

import dataclasses

import numpy as np

Sequence = tuple[np.ndarray, np.ndarray]  # one row's real input_ids and token_type_ids


@dataclasses.dataclass(frozen=True)
class PackedBatch:
    """Sequence i is tokens cu_seqlens[i]:cu_seqlens[i + 1]; tokens past cu_seqlens[-1] are padding."""

    input_ids: np.ndarray  # [tokens] int64
    token_type_ids: np.ndarray  # [tokens] int64
    position_ids: np.ndarray  # [tokens] int64: 0.. within each sequence
    slot_of_token: np.ndarray  # [tokens] int64: the sequence a token belongs to; padding: `slots` (none)
    cu_seqlens: np.ndarray  # [slots + 1] int32
    first_token: np.ndarray  # [slots] int64: each sequence's [CLS] (an empty slot: any token, ignored)
    sequences: int  # the real ones, in slots 0..sequences-1
    max_seqlen: int  # the longest real sequence

    @property
    def slots(self) -> int:
        return len(self.first_token)

    def arrays(self) -> list[np.ndarray]:
        """The batch in the order zsc_server.torch_bert.PlainBert.forward_packed takes it."""
        return [self.input_ids, self.token_type_ids, self.position_ids, self.slot_of_token, self.cu_seqlens,
                self.first_token]


def real_sequences(input_ids: np.ndarray, attention_mask: np.ndarray,
                   token_type_ids: np.ndarray) -> list[Sequence]:
    """The rows of a right-padded [rows, width] batch (as the preprocess makes them) without their padding."""
    lengths = attention_mask.astype(bool).sum(axis=1)
    return [(input_ids[row, :length], token_type_ids[row, :length]) for row, length in enumerate(lengths)]


def pack(sequences: list[Sequence], tokens: int | None = None, slots: int | None = None) -> PackedBatch:
    """`sequences` end to end, padded to `tokens` tokens and `slots` sequence slots (None: no padding)."""
    lengths = np.array([len(ids) for ids, _ in sequences], dtype=np.int64)
    total = int(lengths.sum())
    tokens = total if tokens is None else tokens
    slots = len(sequences) if slots is None else slots
    if total > tokens or len(sequences) > slots:
        raise ValueError(f"{len(sequences)} sequences of {total} tokens do not fit {slots} slots of {tokens} tokens")
    if tokens == 0:
        raise ValueError("a packed batch needs at least one token")
    cu_seqlens = np.full(slots + 1, total, dtype=np.int32)
    cu_seqlens[: len(sequences) + 1] = np.concatenate([[0], np.cumsum(lengths)])
    padding = np.zeros(tokens - total, dtype=np.int64)

    def joined(column: int) -> np.ndarray:
        return np.concatenate([*(np.asarray(s[column], dtype=np.int64) for s in sequences), padding])

    slot_of_token = np.concatenate([np.repeat(np.arange(len(sequences), dtype=np.int64), lengths),
                                    np.full(tokens - total, slots, dtype=np.int64)])
    position_ids = np.concatenate([*(np.arange(length, dtype=np.int64) for length in lengths), padding])
    first_token = np.minimum(cu_seqlens[:-1], tokens - 1).astype(np.int64)
    return PackedBatch(joined(0), joined(1), position_ids, slot_of_token, cu_seqlens, first_token,
                       len(sequences), int(lengths.max(initial=0)))


def token_buckets(largest: int, smallest: int = 64) -> tuple[int, ...]:
    """Total-token sizes to capture: two per doubling (64, 96, 128, 192, ...), so that padding a batch up to its
    bucket adds at most half of it, up to `largest` (always included)."""
    if largest < 1:
        raise ValueError(f"the largest token bucket must be positive, got {largest}")
    sizes, size = [], smallest
    while size < largest:
        sizes += [size] + ([size * 3 // 2] if size * 3 // 2 < largest else [])
        size *= 2
    return tuple(sorted(set(sizes) | {largest}))


def bucket_for(tokens: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket that holds `tokens` (buckets sorted)."""
    for bucket in buckets:
        if bucket >= tokens:
            return bucket
    raise ValueError(f"{tokens} tokens exceed the largest token bucket, {buckets[-1]}")


def chunks(lengths: list[int], max_tokens: int, max_sequences: int) -> list[range]:
    """Consecutive rows in groups of at most `max_tokens` tokens and `max_sequences` rows, each group as full
    as it can be (so that only the last one is replayed padded)."""
    groups, start, tokens = [], 0, 0
    for row, length in enumerate(lengths):
        if length > max_tokens:
            raise ValueError(f"row {row} has {length} tokens, more than a packed batch's {max_tokens}")
        if tokens + length > max_tokens or row - start == max_sequences:
            groups.append(range(start, row))
            start, tokens = row, 0
        tokens += length
    if start < len(lengths):
        groups.append(range(start, len(lengths)))
    return groups
