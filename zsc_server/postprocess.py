"""Encoder output -> ranked labels and scores: the ensemble's last step.

Inside the ensemble its inputs come from the preprocess and the encoder, but any caller of the inference
API can send them to the postprocess directly, so every shape is checked here and a mismatch is that
request's InputError (INVALID_ARG), never an exception from numpy.
"""

from __future__ import annotations

import numpy as np

from zsc_server import tensor_names as names
from zsc_server.scoring import InputError, cosine_scores, nli_scores, rank
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
        raise InputError(names.LABEL_EMBEDDINGS, "were sent in NLI mode, which scores (text, hypothesis) pairs")
    check_shapes(settings, encoder_output, labels, label_embeddings)
    if cached:
        if label_embeddings.shape[0] != len(labels) or encoder_output.shape[0] != 1:
            raise InputError(names.LABEL_EMBEDDINGS, f"{label_embeddings.shape[0]} cached label embeddings and "
                             f"{encoder_output.shape[0]} encoder rows for {len(labels)} labels (expected "
                             f"{len(labels)} and 1, the text)")
        return rank(labels, cosine_scores(np.concatenate([encoder_output, label_embeddings])))
    if settings.mode is ScoringMode.NLI:
        expected_rows = len(labels)
    else:
        expected_rows = len(labels) + 1  # the text's embedding comes first
    if encoder_output.shape[0] != expected_rows:
        raise InputError(names.ENCODER_OUTPUT, f"has {encoder_output.shape[0]} rows for {len(labels)} labels "
                                           f"(expected {expected_rows} in {settings.mode.value} mode)")
    if settings.mode is ScoringMode.NLI:
        scores = nli_scores(
            encoder_output, settings.entailment_index, settings.contradiction_index, multi_label
        )
    else:
        scores = cosine_scores(encoder_output)
    return rank(labels, scores)


def check_shapes(settings: ScoringSettings, encoder_output: np.ndarray, labels: list[str],
                 label_embeddings: np.ndarray | None) -> None:
    """The shapes that the ensemble's own steps always agree on; anything else is a caller's mistake."""
    if not 1 <= len(labels) <= settings.max_labels:
        raise InputError(names.PREPARED_LABELS,
                         f"has {len(labels)} labels; between 1 and {settings.max_labels} (max_labels)")
    if encoder_output.ndim != 2 or encoder_output.shape[1] < 1:
        raise InputError(names.ENCODER_OUTPUT, f"must be [rows, width]; got shape {list(encoder_output.shape)}")
    if settings.mode is ScoringMode.NLI:
        needed = max(settings.entailment_index, settings.contradiction_index) + 1
        if encoder_output.shape[1] < needed:
            raise InputError(names.ENCODER_OUTPUT, f"has {encoder_output.shape[1]} logits per row; NLI scoring reads "
                             f"classes {settings.entailment_index} and {settings.contradiction_index}")
    if label_embeddings is not None and label_embeddings.shape[0] > 0 and (
            label_embeddings.ndim != 2 or label_embeddings.shape[1] != encoder_output.shape[1]):
        raise InputError(names.LABEL_EMBEDDINGS, f"has shape {list(label_embeddings.shape)}; rows of the encoder "
                                             f"output's width {encoder_output.shape[1]} expected")
    if not np.isfinite(encoder_output).all():
        raise InputError(names.ENCODER_OUTPUT, "holds NaN or infinite values")
