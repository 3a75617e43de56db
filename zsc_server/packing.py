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


@dataclasses.dataclass(frozen=True)
class Rows:
    """Rows' real tokens end to end (no padding): row i is tokens offsets[i]:offsets[i + 1]."""

    input_ids: np.ndarray  # [tokens] int64
    token_type_ids: np.ndarray  # [tokens] int64
    lengths: np.ndarray  # [rows] int64

    @classmethod
    def of(cls, batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Rows:
        """The rows of right-padded [rows, width] batches (input_ids, attention_mask, token_type_ids, as the
        preprocess makes them), in order, without their padding."""
        keep = [mask.astype(bool) for _, mask, _ in batches]
        if not batches:
            return cls(*(np.zeros(0, dtype=np.int64) for _ in range(3)))
        return cls(np.concatenate([ids[k] for (ids, _, _), k in zip(batches, keep)]).astype(np.int64),
                   np.concatenate([types[k] for (_, _, types), k in zip(batches, keep)]).astype(np.int64),
                   np.concatenate([k.sum(axis=1) for k in keep]).astype(np.int64))

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def take(self, rows: range) -> Rows:
        """Consecutive rows."""
        offsets = self.offsets
        tokens = slice(offsets[rows.start], offsets[rows.stop])
        return Rows(self.input_ids[tokens], self.token_type_ids[tokens], self.lengths[rows.start:rows.stop])


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


def pack(rows: Rows, tokens: int | None = None, slots: int | None = None) -> PackedBatch:
    """`rows` padded to `tokens` tokens and `slots` sequence slots (None: no padding)."""
    count, total = len(rows.lengths), len(rows.input_ids)
    tokens = total if tokens is None else tokens
    slots = count if slots is None else slots
    if total > tokens or count > slots:
        raise ValueError(f"{count} sequences of {total} tokens do not fit {slots} slots of {tokens} tokens")
    if tokens == 0:
        raise ValueError("a packed batch needs at least one token")
    offsets = rows.offsets
    cu_seqlens = np.full(slots + 1, total, dtype=np.int32)
    cu_seqlens[: count + 1] = offsets

    def padded(real: np.ndarray, fill: int = 0) -> np.ndarray:
        out = np.full(tokens, fill, dtype=np.int64)
        out[:total] = real
        return out

    slot_of_row = np.repeat(np.arange(count, dtype=np.int64), rows.lengths)
    return PackedBatch(
        input_ids=padded(rows.input_ids), token_type_ids=padded(rows.token_type_ids),
        position_ids=padded(np.arange(total, dtype=np.int64) - offsets[:-1][slot_of_row]),
        slot_of_token=padded(slot_of_row, fill=slots),
        cu_seqlens=cu_seqlens, first_token=np.minimum(cu_seqlens[:-1], tokens - 1).astype(np.int64),
        sequences=count, max_seqlen=int(rows.lengths.max(initial=0)))


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
