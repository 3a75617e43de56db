"""Embedding mode beyond MiniLM: a sentence-transformers checkpoint on a RoBERTa encoder with CLS pooling
and a Normalize module, served, scores as cosine similarities of sentence-transformers' own embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import export_repository, start_server
from tests.hf_checkpoints import write_sentence_transformers
from zsc_client import ZeroShotClient

MAX_LENGTH = 128
TOLERANCE = 2e-4
CASES = {
    "labels": dict(text="The app crashes every time I open the settings page.",
                   candidate_labels=["bug report", "billing", "praise", "refund"]),
    "template and label string": dict(text="I was charged twice for my subscription this month.",
                                      candidate_labels="billing, bug report, praise",
                                      hypothesis_template="This message is about {}."),
    "long text truncates": dict(text="Great service, thank you so much! " * 60,
                                candidate_labels=["praise", "complaint"]),
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    root = tmp_path_factory.mktemp("st-cls")
    checkpoint = write_sentence_transformers(root / "checkpoint", pooling="cls", max_seq_length=MAX_LENGTH)
    # "model": where sentence-transformers truncates, its max_seq_length (the encoder's positions take 512)
    repository = export_repository(str(checkpoint), root / "repository", max_length="model")
    server = start_server("st-cls", repository)
    yield server, SentenceTransformer(str(checkpoint), device="cpu")
    server.stop()


def reference(model, text, candidate_labels, hypothesis_template="{}"):
    labels = candidate_labels if isinstance(candidate_labels, list) else [
        label.strip() for label in candidate_labels.split(",") if label.strip()]
    embeddings = model.encode([text] + [hypothesis_template.replace("{}", label) for label in labels])
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    scores = unit[1:] @ unit[0]
    order = np.argsort(-scores, kind="stable")
    return [labels[i] for i in order], [float(scores[i]) for i in order]


@pytest.mark.parametrize("case", list(CASES))
def test_cls_pooling_matches_sentence_transformers(served, protocol, case):
    server, model = served
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with ZeroShotClient(url, protocol) as client:
        got = client.classify(**CASES[case])
    labels, scores = reference(model, **CASES[case])
    assert list(got.labels) == labels
    assert max(abs(a - b) for a, b in zip(got.scores, scores)) <= TOLERANCE
    assert max(scores) - min(scores) > 1e-3  # the random encoder tells the labels apart
