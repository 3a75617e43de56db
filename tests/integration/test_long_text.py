"""Texts longer than max_length, exported with --max-windows: scored as overlapping windows, each label by its
best window, where the default truncates (and the truncating default is what the parity tests check).

The oracle here is the reference pipeline run on each window's text, and the rule as the docs state it:
windows of as many tokens as fit beside the longest hypothesis, each starting three quarters of a window after
the one before, the last ending at the text's end; NLI takes each label's window with the highest entailment
logit, embedding mode each label's highest cosine."""

from __future__ import annotations

import numpy as np
import pytest

from tests.answers import assert_matches
from tests.conftest import serve_minilm, serve_structbert
from zsc_client import ZeroShotClient, ZeroShotClientError

MAX_WINDOWS = 4
LABELS = ["快递", "退款申请", "账户登录"]
# about 150 characters, each one token of the Chinese vocabulary: several windows of max_length 64
TEXT = "我想问一下上周买的东西，" * 11 + "快递到现在还没有送到，我要申请退款。"
FILLER = ("We simmered the onions slowly in butter, added garlic and thyme, then folded in the roasted tomatoes "
          "and let the sauce reduce while the pasta water came to a boil. ") * 6
EVIDENCE = "Unrelated to all that: my parcel never arrived, the courier lost it, and I want a refund."
TOPICS = ["delivery problem", "billing question", "account login"]


def windows(tokens: list[str], room: int) -> list[list[str]]:
    if len(tokens) <= room:
        return [tokens]
    step = room - int(room * 0.25)
    starts = list(range(0, len(tokens) - room, step)) + [len(tokens) - room]
    return [tokens[start:start + room] for start in starts]


@pytest.fixture(scope="module")
def windowed_nli(tmp_path_factory):
    served = serve_structbert(tmp_path_factory.mktemp("windows_nli"), "windows-nli", max_windows=MAX_WINDOWS,
                              max_labels=16)
    yield served
    served.server.stop()


@pytest.fixture(scope="module")
def windowed_embedding(tmp_path_factory):
    served = serve_minilm(tmp_path_factory.mktemp("windows_embedding"), "windows-embedding", max_windows=MAX_WINDOWS)
    yield served
    served.server.stop()


@pytest.mark.parametrize("multi_label", [False, True])
def test_nli_scores_each_label_by_its_best_window_as_the_pipeline_scores_that_window(windowed_nli, multi_label):
    reference = windowed_nli.reference
    tokens = reference.tokenizer.tokenize(TEXT)
    room = reference.max_length - 3 - max(len(reference.tokenizer.tokenize(label)) for label in LABELS)
    parts = windows(tokens, room)
    # the evidence ("快递", "退款") lies past the first max_length, in the last window
    assert len(parts) > 2 and "退" in parts[-1] and "退" not in parts[0]
    logits = np.stack([reference.logits(reference.tokenizer.convert_tokens_to_string(part), LABELS)
                       for part in parts])  # [windows, labels, classes]
    best = logits[:, :, reference.entailment].argmax(axis=0)
    expected = reference.scores(LABELS, logits[best, np.arange(len(LABELS))], multi_label)
    with ZeroShotClient(windowed_nli.server.grpc_url, "grpc") as client:
        result = client.classify(TEXT, LABELS, multi_label=multi_label)
    assert_matches(result, *expected)
    # a text that fits is scored as without windows: the pipeline's own answer
    with ZeroShotClient(windowed_nli.server.grpc_url, "grpc") as client:
        short = client.classify("快递还没到", LABELS, multi_label=multi_label)
    assert_matches(short, *reference("快递还没到", LABELS, multi_label=multi_label))


def test_a_text_over_the_windows_is_refused_naming_the_field(windowed_nli):
    with ZeroShotClient(windowed_nli.server.grpc_url, "grpc") as client, pytest.raises(ZeroShotClientError) as error:
        client.classify(TEXT * 4, LABELS)
    assert "TEXT" in error.value.message and "max_windows" in error.value.message


def test_evidence_past_max_length_is_missed_by_truncation_and_found_by_windows(embedding, windowed_embedding):
    """The real MiniLM: the only sentence about a delivery comes after 200 tokens about cooking."""
    text = FILLER + EVIDENCE
    with ZeroShotClient(embedding.server.grpc_url, "grpc") as client:
        plain = client.classify(text, TOPICS)
    truncated = dict(zip(plain.labels, plain.scores))
    with ZeroShotClient(windowed_embedding.server.grpc_url, "grpc") as client:
        result = client.classify(text, TOPICS)
    windowed = dict(zip(result.labels, result.scores))
    assert windowed["delivery problem"] > truncated["delivery problem"] + 0.2, (truncated, windowed)
    # each label's cosine with its closest window, the windows' texts embedded by the reference
    reference = windowed_embedding.reference
    parts = windows(reference.tokenizer.tokenize(text), reference.max_length - 2)
    texts = [reference.tokenizer.convert_tokens_to_string(part) for part in parts]
    vectors = reference.embed(texts + TOPICS)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = (vectors[len(texts):] @ vectors[:len(texts)].T).max(axis=1)
    order = list(np.argsort(-cosines, kind="stable"))
    assert_matches(result, [TOPICS[i] for i in order], [float(cosines[i]) for i in order])
