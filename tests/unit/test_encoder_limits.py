"""zsc_server.encoder_limits and zsc_server.throttled_log: what a direct caller of the encoder may send.
Over a real server (a flood of bad requests beside good ones): tests/integration/test_exposure.py."""

from __future__ import annotations

import numpy as np
import pytest

from zsc_server.encoder_limits import EncoderLimits, check_request
from zsc_server.scoring import InputError
from zsc_server.throttled_log import ThrottledLog

LIMITS = EncoderLimits(max_sequence_length=16, vocab_size=100, type_vocab_size=2)


def feed(rows: int = 2, tokens: int = 8, **override) -> dict:
    arrays = {"input_ids": np.full((rows, tokens), 5, np.int64), "attention_mask": np.ones((rows, tokens), np.int64),
              "token_type_ids": np.zeros((rows, tokens), np.int64)}
    return arrays | override


def test_a_request_within_the_limits_passes_unchanged():
    arrays = feed()
    assert check_request(arrays, LIMITS) == arrays
    padded = feed(attention_mask=np.array([[1] * 8, [1, 1, 1, 0, 0, 0, 0, 0]]))
    assert check_request(padded, LIMITS) == padded


@pytest.mark.parametrize(("override", "field", "message"), [
    ({"input_ids": np.full((2, 8), 100, np.int64)}, "input_ids", r"holds 100, outside \[0, 100\)"),
    ({"input_ids": np.full((2, 8), -1, np.int64)}, "input_ids", r"holds -1"),
    ({"input_ids": np.full((2, 8), 10**9, np.int64)}, "input_ids", "vocabulary"),
    ({"attention_mask": np.full((2, 8), 3, np.int64)}, "attention_mask", "0 or 1"),
    ({"token_type_ids": np.full((2, 8), 2, np.int64)}, "token_type_ids", "segment"),
    ({"attention_mask": np.ones((2, 9), np.int64)}, "attention_mask", "same shape"),
    # a packed batch would read these rows' tokens from the next row (zsc_server/packing.py)
    ({"attention_mask": np.array([[1] * 8, [0] * 8])}, "attention_mask", "must start each row with a token"),
    ({"attention_mask": np.array([[1] * 8, [0, 1, 1, 1, 0, 0, 0, 0]])}, "attention_mask", "start each row"),
    ({"attention_mask": np.array([[1] * 8, [1, 1, 0, 1, 0, 0, 0, 0]])}, "attention_mask", "1s then 0s"),
    ({"token_type_ids": None}, "token_type_ids", "is required"),
])
def test_each_bad_input_is_named(override, field, message):
    with pytest.raises(InputError, match=message) as caught:
        check_request(feed(**override), LIMITS)
    assert caught.value.field == field


def test_rows_longer_than_the_export_are_refused_and_empty_shapes_too():
    with pytest.raises(InputError, match="17 tokens per row; this encoder was exported for at most 16"):
        check_request(feed(tokens=17), LIMITS)
    with pytest.raises(InputError, match="at least one of each"):
        check_request(feed(tokens=0), LIMITS)


def test_limits_round_trip_through_config_parameters_and_old_exports_check_shapes_only():
    assert EncoderLimits.from_parameters(LIMITS.to_parameters() | {"other": "x"}) == LIMITS
    assert EncoderLimits.from_parameters({"vocab_size": "100"}) is None
    assert check_request(feed(input_ids=np.full((2, 8), 10**9, np.int64)), None)


def test_the_log_writes_one_line_a_second_and_counts_the_rest():
    lines, now = [], [0.0]
    log = ThrottledLog(lines.append, interval_s=1.0, clock=lambda: now[0])
    for _ in range(1000):
        log("refused")
    now[0] = 1.5
    log("refused again")
    assert lines == ["refused", "refused again (and 999 more like it since the last line)"]
