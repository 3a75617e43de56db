"""How the tests judge a served answer against a reference pipeline's."""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-4  # FP32 scores, served vs the reference


def assert_matches(result, expected_labels, expected_scores):
    assert len(result.labels) == len(expected_labels)
    np.testing.assert_allclose(result.scores, expected_scores, atol=TOLERANCE, rtol=0)
    # Orders agree except where two scores tie within the tolerance.
    for got, want, score in zip(result.labels, expected_labels, expected_scores):
        if got != want:
            assert abs(dict(zip(expected_labels, expected_scores))[got] - score) <= TOLERANCE
