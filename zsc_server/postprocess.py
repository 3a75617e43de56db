"""Encoder output -> ranked labels and scores: the ensemble's last step."""

from __future__ import annotations

import numpy as np

from zsc_server.scoring import cosine_scores, nli_scores, rank
from zsc_server.settings import ScoringMode, ScoringSettings


def score_labels(
    settings: ScoringSettings, encoder_output: np.ndarray, labels: list[str], multi_label: bool,
    label_embeddings: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray]:
    """NLI: entailment probabilities; embedding: cosine similarities. Sorted, highest first.

    label_embeddings (embedding mode, label cache on): the hypotheses' embeddings from the preprocess's
    cache, one row per label, and `encoder_output` holds the text's embedding alone. With none (or 0 rows),
    `encoder_output` holds the text's and then each hypothesis's, as without a cache."""
    cached = label_embeddings is not None and label_embeddings.shape[0] > 0
    if cached and settings.mode is ScoringMode.NLI:
        raise ValueError("label embeddings were sent in NLI mode, which scores (text, hypothesis) pairs")
    if cached:
        if label_embeddings.shape[0] != len(labels) or encoder_output.shape[0] != 1:
            raise ValueError(
                f"{label_embeddings.shape[0]} cached label embeddings and {encoder_output.shape[0]} encoder "
                f"rows for {len(labels)} labels (expected {len(labels)} and 1, the text)"
            )
        return rank(labels, cosine_scores(np.concatenate([encoder_output, label_embeddings])))
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
