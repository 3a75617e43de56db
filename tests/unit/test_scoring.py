import numpy as np
import pytest

from zsc_server.scoring import (
    InputError,
    check_template,
    cosine_scores,
    decode_utf8,
    hypotheses_bytes,
    is_blank,
    make_hypotheses,
    nli_scores,
    parse_labels,
    rank,
)


@pytest.mark.parametrize("values, expected", [
    (["咨询,投诉，建议"], ["咨询", "投诉", "建议"]),
    ([" a , b ,, c ,"], ["a", "b", "c"]),
    (["solo"], ["solo"]),
    (["a, b", "c"], ["a, b", "c"]),  # several values are labels as given, commas kept
])
def test_parse_labels(values, expected):
    assert parse_labels(values) == expected


@pytest.mark.parametrize("values", [[""], [" ,，"], []])
def test_parse_labels_refuses_none(values):
    with pytest.raises(InputError, match="CANDIDATE_LABELS: no candidate labels"):
        parse_labels(values)


@pytest.mark.parametrize("values", [["a,\u200b"], ["a", "\u200b\u200c\u200d"], ["\ufeff"], ["a", "\u00ad \u2060"]])
def test_labels_with_nothing_visible_are_refused(values):
    """Zero-width spaces and joiners, BOM, soft hyphen, word joiner: str.strip() keeps them, and the
    hypothesis would read as the template alone."""
    with pytest.raises(InputError, match=r"CANDIDATE_LABELS: label \d .* has no visible characters"):
        parse_labels(values)


def test_labels_that_merely_contain_invisible_characters_are_kept():
    assert parse_labels(["投\u200b诉,a\u200db"]) == ["投\u200b诉", "a\u200db"]
    assert not is_blank("投\u200b诉") and is_blank(" \u200b\t\ufeff")


def test_templates():
    assert check_template("这是{}") == "这是{}"
    with pytest.raises(InputError, match="HYPOTHESIS_TEMPLATE"):
        check_template("{0}")
    assert make_hypotheses("{} / {0.__class__} / {}", ["x"]) == ["x / {0.__class__} / x"]
    for template, labels in (("{} / {0.__class__} / {}", ["x", "投诉"]), ("前{}后", ["é"]), ("无", ["a"])):
        assert hypotheses_bytes(template, labels) == sum(len(h.encode()) for h in make_hypotheses(template, labels))


def test_decode_utf8_names_field():
    with pytest.raises(InputError, match="TEXT: is not valid UTF-8"):
        decode_utf8(b"\xff", "TEXT")


def test_nli_single_label_softmax_across_labels():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [1.0, 5.0, 3.0]])
    scores = nli_scores(logits, entailment_index=0, contradiction_index=2, multi_label=False)
    expected = np.exp([2.0, 0.0, 1.0]) / np.exp([2.0, 0.0, 1.0]).sum()
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_nli_multi_label_and_one_label_use_contradiction_vs_entailment():
    logits = np.array([[2.0, 9.0, -1.0], [0.0, 0.0, 3.0]])
    multi = nli_scores(logits, 0, 2, multi_label=True)
    np.testing.assert_allclose(multi, [1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(3.0))], rtol=1e-6)
    one = nli_scores(logits[:1], 0, 2, multi_label=False)
    np.testing.assert_allclose(one, multi[:1], rtol=1e-6)


def test_nli_respects_indices():
    logits = np.array([[0.0, 0.0, 4.0], [0.0, 0.0, 1.0]])
    assert nli_scores(logits, entailment_index=2, contradiction_index=0, multi_label=False)[0] > 0.9


def test_cosine_scores():
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    np.testing.assert_allclose(cosine_scores(emb), [1.0, 0.0, -1.0], atol=1e-7)


def test_rank_sorts_descending():
    labels, scores = rank(["a", "b", "c"], np.array([0.2, 0.5, 0.3]))
    assert labels == ["b", "c", "a"] and list(scores) == [0.5, 0.3, 0.2]


def test_tied_labels_keep_the_order_they_were_given_in():
    """'Sports' and 'sports' are one hypothesis to an uncased tokenizer: the same score, in request order."""
    scores = np.array([0.25, 0.25, 0.4, 0.1], dtype=np.float32)
    assert rank(["Sports", "sports", "news", "weather"], scores)[0] == ["news", "Sports", "sports", "weather"]
    assert rank(["sports", "Sports", "news", "weather"], scores)[0] == ["news", "sports", "Sports", "weather"]


def test_windows_score_each_label_by_its_best_window():
    from zsc_server.postprocess import score_labels
    from zsc_server.settings import ScoringMode, ScoringSettings

    nli = ScoringSettings(max_windows=3)  # entailment 0, contradiction 2
    logits = np.array([[[1.0, 0, 0], [0.2, 0, 0]],  # window 0: label a, label b
                       [[0.5, 0, 0], [2.0, 0, 0]]])  # window 1
    labels, scores = score_labels(nli, logits.reshape(4, 3), ["a", "b"], multi_label=True)
    # a from window 0 (1.0 > 0.5), b from window 1 (2.0 > 0.2): softmax over [contradiction, entailment]
    assert labels == ["b", "a"] and np.allclose(scores, [1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(-1.0))])
    one = score_labels(nli, logits[0], ["a", "b"], multi_label=True)  # one window: as without windows
    assert one[0] == ["a", "b"]
    with pytest.raises(InputError, match="encoder_output: 8 encoder rows .*up to 3 windows"):
        score_labels(nli, np.zeros((8, 3)), ["a", "b"], multi_label=False)  # 4 windows
    embedding = ScoringSettings(mode=ScoringMode.EMBEDDING, max_windows=2)
    windows, hypotheses = np.array([[1.0, 0], [0, 1.0]]), np.array([[0.0, 1], [1, 0.1]])
    labels, scores = score_labels(embedding, np.concatenate([windows, hypotheses]), ["x", "y"], False)
    assert np.allclose(sorted(scores), [1 / np.hypot(1, 0.1), 1.0])  # each its closest window
    cached = score_labels(embedding, windows, ["x", "y"], False, label_embeddings=hypotheses)
    assert cached[0] == labels and np.allclose(cached[1], scores)
    with pytest.raises(InputError, match="encoder_output: 4 encoder rows"):
        score_labels(ScoringSettings(mode=ScoringMode.EMBEDDING), np.concatenate([windows, hypotheses]), ["x", "y"],
                     False)  # two text rows without windows
