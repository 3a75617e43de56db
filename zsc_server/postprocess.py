"""Encoder output -> ranked labels and scores: the ensemble's last step."""

from __future__ import annotations

import numpy as np

from zsc_server.scoring import cosine_scores, nli_scores, rank
from zsc_server.settings import ScoringMode, ScoringSettings


def score_labels(
    settings: ScoringSettings, encoder_output: np.ndarray, labels: list[str], multi_label: bool
) -> tuple[list[str], np.ndarray]:
    """NLI: entailment probabilities; embedding: cosine similarities. Sorted, highest first."""
    if settings.mode is ScoringMode.NLI:
        expected_rows = len(labels)
    else:
        expected_rows = len(labels) + 1  # the text's embedding comes first
    if encoder_output.shape[0] != expected_rows:
        raise ValueError(
            f"encoder returned {encoder_output.shape[0]} rows for {len(labels)} labels "
            f"(expected {expected_rows} in {settings.mode.value} mode)"
        )
    if settings.mode is ScoringMode.NLI:
        scores = nli_scores(
            encoder_output, settings.entailment_index, settings.contradiction_index, multi_label
        )
    else:
        scores = cosine_scores(encoder_output)
    return rank(labels, scores)
