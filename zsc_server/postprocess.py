"""Encoder output -> ranked labels and scores: the ensemble's last step.

Inside the ensemble its inputs come from the preprocess and the encoder, but any caller of the inference
API can send them to the postprocess directly, so every shape is checked here and a mismatch is that
request's InputError (INVALID_ARG), never an exception from numpy.
"""

from __future__ import annotations

import numpy as np

from zsc_server import tensor_names as names
from zsc_server.label_prompt import row_count
from zsc_server.scoring import InputError, cosine_scores, label_logit_scores, nli_scores, rank
from zsc_server.settings import ScoringMode, ScoringSettings


def score_labels(
    settings: ScoringSettings, encoder_output: np.ndarray, labels: list[str], multi_label: bool,
    label_embeddings: np.ndarray | None = None,
) -> tuple[list[str], np.ndarray]:
    """NLI: entailment probabilities; embedding: cosine similarities; GLiClass: the labels' logits as
    probabilities. Sorted, highest first.

    label_embeddings (embedding mode, label cache on): the hypotheses' embeddings from the preprocess's
    cache, one row per label, and `encoder_output` holds the text's embedding alone. With none (or 0 rows),
    `encoder_output` holds the text's and then each hypothesis's, as without a cache."""
    cached = label_embeddings is not None and label_embeddings.shape[0] > 0
    if cached and settings.mode is not ScoringMode.EMBEDDING:
        raise InputError(names.LABEL_EMBEDDINGS, f"were sent in {settings.mode.value.upper()} mode, which encodes "
                         "the labels with the text")
    check_shapes(settings, encoder_output, labels, label_embeddings)
    if settings.mode is ScoringMode.GLICLASS:
        return rank(labels, label_logit_scores(label_logits(settings, encoder_output, len(labels)), multi_label))
    rows, count = encoder_output.shape[0], len(labels)
    if settings.mode is ScoringMode.NLI:
        windows = rows // count if rows % count == 0 else 0
        expected = f"{count}, or a multiple of it up to {settings.max_windows} windows"
    else:
        windows = rows if cached else rows - count  # the text's rows come first
        expected = (f"{f'{count} embeddings and ' if cached else f'{count} + '}1 for the text"
                    + (f", up to {settings.max_windows} windows" if settings.max_windows > 1 else ""))
    if cached and label_embeddings.shape[0] != count:
        windows = 0  # as many cached embeddings as labels, or the request is not one the preprocess made
    if not 1 <= windows <= settings.max_windows:
        field = names.LABEL_EMBEDDINGS if cached else names.ENCODER_OUTPUT
        cached_rows = f"{label_embeddings.shape[0]} cached label embeddings and " if cached else ""
        raise InputError(field, f"{cached_rows}{rows} encoder rows for {count} labels (expected {expected}, "
                         f"in {settings.mode.value} mode)")
    if settings.mode is ScoringMode.NLI:
        logits = encoder_output.reshape(windows, count, -1)
        # each label's pairs, by window: the window with the highest entailment logit speaks for the label
        best = logits[:, :, settings.entailment_index].argmax(axis=0)
        chosen = logits[best, np.arange(count)]
        return rank(labels, nli_scores(chosen, settings.entailment_index, settings.contradiction_index, multi_label))
    hypotheses = label_embeddings if cached else encoder_output[windows:]
    # each label's cosine with the window closest to it
    scores = np.max([cosine_scores(np.concatenate([encoder_output[w:w + 1], hypotheses])) for w in range(windows)],
                    axis=0)
    return rank(labels, scores)


def label_logits(settings: ScoringSettings, encoder_output: np.ndarray, count: int) -> np.ndarray:
    """GLiClass: each row's logits for the labels it holds (zsc_server.label_prompt), in label order."""
    per_row = settings.labels_per_row
    rows = row_count(count, per_row)
    if encoder_output.shape != (rows, per_row):
        raise InputError(names.ENCODER_OUTPUT, f"has shape {list(encoder_output.shape)}; {count} labels take "
                         f"[{rows}, {per_row}] ({per_row} labels per row)")
    return encoder_output.reshape(-1)[:count]


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
