"""A ragged dynamic batch runs as one encoder call per sequence length (zsc_server.batching)."""

from __future__ import annotations

import numpy as np

from zsc_server.batching import by_sequence_length, run_by_sequence_length

NAMES = ["input_ids", "attention_mask"]


def feed(rows: int, sequence: int, fill: int) -> dict[str, np.ndarray]:
    return {"input_ids": np.full((rows, sequence), fill, dtype=np.int64),
            "attention_mask": np.ones((rows, sequence), dtype=np.int64)}


def test_requests_are_grouped_by_length_and_answered_in_their_own_order():
    feeds = [feed(2, 16, 1), feed(3, 32, 2), feed(1, 16, 3), feed(2, 32, 4)]
    groups = by_sequence_length(feeds, NAMES)
    assert [indices for indices, _ in groups] == [[0, 2], [1, 3]]
    assert [inputs["input_ids"].shape for _, inputs in groups] == [(3, 16), (5, 32)]  # no padding across lengths
    calls = []

    def run(inputs):  # an "encoder" whose output rows say which input row they came from, and its length
        calls.append(inputs["input_ids"].shape)
        ids = inputs["input_ids"]
        return [np.stack([ids[:, 0], np.full(len(ids), ids.shape[1])], axis=1)]

    per_request = run_by_sequence_length(feeds, NAMES, run)
    assert calls == [(3, 16), (5, 32)]
    for request, outputs in zip(feeds, per_request):
        [rows] = outputs
        assert rows.shape == (request["input_ids"].shape[0], 2)
        assert (rows[:, 0] == request["input_ids"][:, 0]).all()
        assert (rows[:, 1] == request["input_ids"].shape[1]).all()


def test_a_call_takes_at_most_the_rows_per_call_and_the_answers_are_the_same():
    feeds = [feed(150, 16, 1), feed(100, 16, 2), feed(3, 32, 3)]
    calls = []

    def run(inputs):
        calls.append(inputs["input_ids"].shape)
        return [inputs["input_ids"][:, :1] * 10]

    whole = run_by_sequence_length(feeds, NAMES, run)
    calls.clear()
    chunked = run_by_sequence_length(feeds, NAMES, run, max_rows=64)
    assert calls == [(64, 16), (64, 16), (64, 16), (58, 16), (3, 32)]  # 250 rows of one length: four calls
    for a, b in zip(whole, chunked):
        np.testing.assert_array_equal(a[0], b[0])
