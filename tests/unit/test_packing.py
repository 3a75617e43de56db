"""How the packed layout cuts a batch (zsc_server.packing): token buckets, groups of rows, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from zsc_server.packing import Rows, bucket_for, chunks, pack, token_buckets


def test_token_buckets_step_by_half_a_doubling_up_to_the_largest():
    assert token_buckets(1000) == (64, 96, 128, 192, 256, 384, 512, 768, 1000)
    assert token_buckets(128, smallest=32) == (32, 48, 64, 96, 128)
    buckets = token_buckets(65_536)
    assert max(b / a for a, b in zip(buckets, buckets[1:])) <= 1.5  # padding to a bucket adds at most half
    with pytest.raises(ValueError):
        token_buckets(0)


def test_a_batch_goes_to_the_smallest_bucket_that_holds_it():
    assert [bucket_for(n, (64, 96, 128)) for n in (1, 64, 65, 128)] == [64, 64, 96, 128]
    with pytest.raises(ValueError, match="129 tokens exceed the largest token bucket, 128"):
        bucket_for(129, (64, 96, 128))


def test_rows_are_grouped_in_order_each_group_as_full_as_it_can_be():
    assert chunks([3, 4, 5, 2, 7], max_tokens=8, max_sequences=2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert chunks([1] * 5, max_tokens=100, max_sequences=2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert chunks([8, 8], max_tokens=8, max_sequences=9) == [range(0, 1), range(1, 2)]
    assert chunks([], max_tokens=8, max_sequences=2) == []
    with pytest.raises(ValueError, match="row 1 has 9 tokens"):
        chunks([1, 9], max_tokens=8, max_sequences=2)


def two_requests() -> Rows:
    """Rows of two requests of different widths: lengths 2, 3 (width 4) and 1 (width 2)."""
    first = (np.array([[1, 2, 0, 0], [3, 4, 5, 0]]), np.array([[1, 1, 0, 0], [1, 1, 1, 0]]),
             np.array([[0, 1, 0, 0], [0, 0, 1, 0]]))
    second = (np.array([[6, 0]]), np.array([[1, 0]]), np.array([[0, 0]]))
    return Rows.of([first, second])


def test_rows_keep_each_requests_real_tokens_in_order():
    rows = two_requests()
    assert rows.input_ids.tolist() == [1, 2, 3, 4, 5, 6] and rows.token_type_ids.tolist() == [0, 1, 0, 0, 1, 0]
    assert rows.lengths.tolist() == [2, 3, 1] and rows.offsets.tolist() == [0, 2, 5, 6]
    assert rows.take(range(1, 3)).input_ids.tolist() == [3, 4, 5, 6]
    batch = pack(rows.take(range(1, 3)), tokens=8, slots=3)
    assert batch.position_ids.tolist() == [0, 1, 2, 0, 0, 0, 0, 0]
    assert batch.slot_of_token.tolist() == [0, 0, 0, 1, 3, 3, 3, 3] and batch.cu_seqlens.tolist() == [0, 3, 4, 4]


def test_pack_refuses_what_does_not_fit_its_shape():
    with pytest.raises(ValueError, match="3 sequences of 6 tokens do not fit 4 slots of 5 tokens"):
        pack(two_requests(), tokens=5, slots=4)
    with pytest.raises(ValueError, match="do not fit 2 slots"):
        pack(two_requests(), tokens=16, slots=2)


def test_a_batch_of_padding_only_is_a_valid_warm_up_input():
    batch = pack(Rows.of([]), tokens=64, slots=4)
    assert batch.cu_seqlens.tolist() == [0] * 5 and set(batch.slot_of_token) == {4}
    assert batch.sequences == 0 and batch.first_token.tolist() == [0] * 4
