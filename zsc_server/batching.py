"""Merge the requests of a Triton dynamic batch into encoder calls and split the results back.

The Python-backend encoders accept ragged batches (requests padded to different sequence buckets in one
batch: fine CPU buckets would otherwise leave the batcher little to merge, and every execution costs a
round trip to the stub). A batch runs as one call per sequence length among its requests
(`by_sequence_length`), so no row is padded beyond its own bucket. Within a call, requests are
right-padded to the longest; padding with attention_mask 0 does not change a row's result. Shared by the
encoder runtimes (ONNX Runtime, torch).
"""

from __future__ import annotations

import numpy as np


def merge_feeds(feeds: list[dict[str, np.ndarray]], names: list[str]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Per-request {name: [rows, seq]} -> one {name: [sum(rows), max(seq)]}, and each request's rows."""
    sequence = max(feed[names[0]].shape[1] for feed in feeds)
    merged = {name: np.concatenate([pad_to(feed[name], sequence) for feed in feeds], axis=0) for name in names}
    return merged, [feed[names[0]].shape[0] for feed in feeds]


def split_rows(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(array, np.cumsum(sizes)[:-1], axis=0)


def pad_to(array: np.ndarray, sequence: int) -> np.ndarray:
    if array.shape[1] == sequence:
        return array
    return np.pad(array, ((0, 0), (0, sequence - array.shape[1])))


def by_sequence_length(feeds: list[dict[str, np.ndarray]], names: list[str]) -> list[tuple[list[int], dict]]:
    """The requests of a batch grouped by sequence length, each group merged: [(request indices, inputs)]."""
    groups: dict[int, list[int]] = {}
    for index, feed in enumerate(feeds):
        groups.setdefault(feed[names[0]].shape[1], []).append(index)
    return [(indices, merge_feeds([feeds[i] for i in indices], names)[0]) for indices in groups.values()]


def run_in_calls(run, inputs: dict[str, np.ndarray], max_rows: int) -> list[np.ndarray]:
    """`run(inputs)`, as calls of at most `max_rows` rows (0: one call) whose outputs are put back together."""
    rows = next(iter(inputs.values())).shape[0]
    if not max_rows or rows <= max_rows:
        return run(inputs)
    parts = [run({name: array[start:start + max_rows] for name, array in inputs.items()})
             for start in range(0, rows, max_rows)]
    return [np.concatenate([part[index] for part in parts], axis=0) for index in range(len(parts[0]))]


def run_by_sequence_length(feeds: list[dict[str, np.ndarray]], names: list[str], run,
                           max_rows: int = 0) -> list[list[np.ndarray]]:
    """`run(inputs) -> [output arrays]` once per sequence length among the requests (in calls of at most
    `max_rows` rows, when set); returns, per request, its rows of each output, in the requests' order."""
    results: list[list[np.ndarray] | None] = [None] * len(feeds)
    for indices, inputs in by_sequence_length(feeds, names):
        sizes = [feeds[i][names[0]].shape[0] for i in indices]
        per_output = [split_rows(output, sizes) for output in run_in_calls(run, inputs, max_rows)]
        for position, index in enumerate(indices):
            results[index] = [parts[position] for parts in per_output]
    return results
