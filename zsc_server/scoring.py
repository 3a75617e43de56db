"""Label parsing, hypothesis templating and score computation (ModelScope semantics).

Reference: modelscope/pipelines/nlp/zero_shot_classification_pipeline.py
- a label string is split on ',' and '，', each part stripped, empty parts dropped;
- hypothesis = template with '{}' replaced by the label (default template '{}');
- single-label: softmax of the entailment logits across labels;
- multi-label, or exactly one label: per-label softmax over [contradiction, entailment];
- labels returned sorted by score, highest first.
"""

from __future__ import annotations

import unicodedata

import numpy as np

from zsc_server import tensor_names as names


class InputError(ValueError):
    """A request input is invalid; ``field`` names the ensemble input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def decode_utf8(raw: bytes, field: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(field, f"is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None


def is_blank(value: str) -> bool:
    """Nothing visible: whitespace and format characters only (zero-width spaces and joiners, BOM, soft
    hyphen: Unicode category Cf), which str.strip() keeps. A blank label still makes a hypothesis, one
    that reads as the template alone: a label nobody could have meant."""
    return all(char.isspace() or unicodedata.category(char) == "Cf" for char in value)


def parse_labels(values: list[str]) -> list[str]:
    """One value is a label string split on ',' / '，'; several values are the labels themselves."""
    if len(values) == 1:
        labels = [part.strip() for part in values[0].replace("，", ",").split(",")]
        labels = [label for label in labels if label]
    else:
        labels = list(values)
        for i, label in enumerate(labels):
            if not label.strip():
                raise InputError(names.CANDIDATE_LABELS, f"label {i} is empty")
    if not labels:
        raise InputError(names.CANDIDATE_LABELS, "no candidate labels given (send at least one non-empty label)")
    for i, label in enumerate(labels):
        if is_blank(label):
            raise InputError(names.CANDIDATE_LABELS, f"label {i} ({label!r}) has no visible characters")
    return labels


def check_template(template: str) -> str:
    if "{}" not in template:
        raise InputError(
            names.HYPOTHESIS_TEMPLATE,
            f"must contain '{{}}' where the label goes, e.g. 'This text is about {{}}.'; got {template!r}",
        )
    return template


def make_hypotheses(template: str, labels: list[str]) -> list[str]:
    # str.replace, not str.format: a template is user input and format() would
    # evaluate field expressions such as '{0.__class__}'.
    return [template.replace("{}", label) for label in labels]


def hypotheses_bytes(template: str, labels: list[str]) -> int:
    """The UTF-8 size of ``make_hypotheses(template, labels)``, without building them."""
    slots = template.count("{}")
    fixed = len(template.encode("utf-8")) - 2 * slots
    return len(labels) * fixed + slots * sum(len(label.encode("utf-8")) for label in labels)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - np.max(x, axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=axis, keepdims=True)


def nli_scores(
    logits: np.ndarray, entailment_index: int, contradiction_index: int, multi_label: bool
) -> np.ndarray:
    """Scores from [num_labels, num_classes] NLI logits."""
    logits = np.asarray(logits, dtype=np.float64)
    if multi_label or logits.shape[0] == 1:
        pair = logits[:, [contradiction_index, entailment_index]]
        return softmax(pair, axis=-1)[:, 1].astype(np.float32)
    return softmax(logits[:, entailment_index], axis=-1).astype(np.float32)


def label_logit_scores(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """GLiClass: a sigmoid of each label's logit (multi-label), or a softmax across the labels."""
    logits = np.asarray(logits, dtype=np.float64)
    if multi_label:
        small = np.exp(-np.abs(logits))  # the sigmoid without exp's overflow, small scores kept apart
        return np.where(logits >= 0, 1 / (1 + small), small / (1 + small)).astype(np.float32)
    return softmax(logits).astype(np.float32)


def cosine_scores(embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of row 0 (the text) to each following row (the hypotheses)."""
    emb = np.asarray(embeddings, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
    unit = emb / norms
    return (unit[1:] @ unit[0]).astype(np.float32)


def rank(labels: list[str], scores: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Labels and scores sorted by score, highest first; tied labels (the same hypothesis to an uncased
    tokenizer: 'Sports' and 'sports') keep the order they were given in. The pipelines' reversed argsort
    is not stable: their order of ties depends on the platform's numpy."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    return [labels[i] for i in order], np.asarray(scores)[order]
