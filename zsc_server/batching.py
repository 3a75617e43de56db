"""Merge the requests of a Triton dynamic batch into one encoder call and split the result back.

Requests are right-padded to the longest sequence among them; padding with attention_mask 0 does not
change a row's result. Shared by the encoder runtimes (ONNX Runtime, torch).
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
