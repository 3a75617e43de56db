"""Served scores equal a PyTorch reference of ModelScope's pipeline (FP32, <= 1e-4), over gRPC and HTTP."""

from __future__ import annotations

import pytest

from tests.answers import assert_matches

COMPLAINT = "这个产品质量太差了，我要投诉！"
DELIVERY = "我的快递三天了还没到，请帮我查一下物流。"
LONG_TEXT = "我的快递三天了还没到，请帮我查一下物流。" * 40  # far past max_length: truncated
FORTY_LABELS = [f"类型{i}" for i in range(40)]

CASES = {
    "single-label list": dict(text=COMPLAINT, candidate_labels=["咨询", "投诉", "建议"]),
    "multi-label": dict(text=COMPLAINT, candidate_labels=["咨询", "投诉", "建议"], multi_label=True),
    "comma string, both commas": dict(text=DELIVERY, candidate_labels=" 咨询,投诉，建议 ,, "),
    "custom template": dict(text=DELIVERY, candidate_labels=["物流", "退款", "表扬"],
                            hypothesis_template="这是一条关于{}的文本"),
    "template multi-label": dict(text="the app crashes every time i open settings",
                                 candidate_labels=["bug report", "praise", "billing"],
                                 hypothesis_template="this text is about {}.", multi_label=True),
    "one label": dict(text=COMPLAINT, candidate_labels=["投诉"]),
    "one label as string": dict(text=COMPLAINT, candidate_labels="投诉"),
    "forty labels": dict(text=DELIVERY, candidate_labels=FORTY_LABELS),
    "long text truncates": dict(text=LONG_TEXT, candidate_labels=["咨询", "投诉", "建议"]),
    "long text multi-label": dict(text=LONG_TEXT, candidate_labels=FORTY_LABELS[:7], multi_label=True),
}


def classify_and_compare(served, protocol: str, kwargs: dict):
    """Classify through the server and assert the answer equals the served model's reference."""
    with served.client(protocol) as client:
        result = client.classify(**kwargs)
    labels, scores = served.reference(**kwargs)
    assert_matches(result, labels, scores)
    return result


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_structbert_modelscope_layout(structbert, protocol, case):
    kwargs = CASES[case]
    result = classify_and_compare(structbert, protocol, kwargs)
    assert result.scores == sorted(result.scores, reverse=True)
    if not kwargs.get("multi_label") and len(result.labels) > 1:
        assert sum(result.scores) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_python_torch_runtime(structbert_torch, protocol, case):
    classify_and_compare(structbert_torch, protocol, CASES[case])


def test_scores_are_not_uniform(structbert):
    """Guards the parity tests against a degenerate model whose scores are all equal."""
    with structbert.client() as client:
        result = client.classify(COMPLAINT, FORTY_LABELS)
    assert max(result.scores) - min(result.scores) > 0.01


@pytest.mark.parametrize("case", ["single-label list", "multi-label", "custom template", "long text truncates"])
def test_huggingface_layout_uses_label2id(hf_nli, protocol, case):
    classify_and_compare(hf_nli, protocol, CASES[case])


EMBEDDING_CASES = {
    "english": dict(text="The app crashes every time I open the settings page.",
                    candidate_labels=["bug report", "billing question", "praise", "feature request"]),
    "template": dict(text="I was charged twice for my subscription this month.",
                     candidate_labels="bug report, billing question, praise",
                     hypothesis_template="This message is a {}."),
    "long text": dict(text="Great service, thank you so much! " * 100,
                      candidate_labels=["praise", "complaint"]),
    # the most labels a request may carry: the encoder runs the rows in calls of 64 (rows_per_call)
    "256 labels": dict(text="My parcel is three days late.", candidate_labels=[f"topic {i}" for i in range(256)]),
}


@pytest.mark.parametrize("case", EMBEDDING_CASES, ids=list(EMBEDDING_CASES))
def test_embedding_mode_cosine(embedding, protocol, case):
    classify_and_compare(embedding, protocol, EMBEDDING_CASES[case])


def test_embedding_mode_real_semantics(embedding):
    """The offline demo model ranks the obvious label first (real weights, not random)."""
    with embedding.client() as client:
        result = client.classify("I was charged twice for my subscription this month.",
                                 ["software bug", "billing problem", "compliment"])
    assert result.labels[0] == "billing problem"
    assert -1.0 <= min(result.scores) and max(result.scores) <= 1.0
