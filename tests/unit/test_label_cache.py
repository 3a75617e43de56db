"""The label cache (zsc_server.label_cache), the warm-labels file and the cached scoring path, without a
server. `encode` here is a deterministic stand-in for the encoder: the cache only sees vectors, and the
served answers are compared with and without the cache against real MiniLM in
tests/integration/test_label_cache.py."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from zsc_server.label_cache import LabelCache, LabelCacheSettings, entry_bytes
from zsc_server.postprocess import score_labels
from zsc_server.preprocess import Preprocessor
from zsc_server.scoring import InputError
from zsc_server.settings import ScoringMode, ScoringSettings
from zsc_server.warm_labels import MAX_WARM_LABELS_BYTES, WarmLabelSet, parse_warm_labels, warm_cache

HIDDEN = 8


def vector(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return np.random.default_rng(seed).standard_normal(HIDDEN).astype(np.float32)


class Encoder:
    """Embeds each string by its hash, and records what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, hypotheses: list[str]) -> np.ndarray:
        self.calls.append(list(hypotheses))
        return np.stack([vector(h) for h in hypotheses])


def one_entry() -> int:
    return entry_bytes("label 0", vector("label 0"))


def test_misses_are_encoded_once_in_one_call_and_then_hit():
    cache, encode = LabelCache(1 << 20), Encoder()
    first = cache.embeddings(["a", "b", "a", "c"], encode)
    assert encode.calls == [["a", "b", "c"]]  # distinct, first-seen order, one call
    np.testing.assert_array_equal(first, np.stack([vector(h) for h in ["a", "b", "a", "c"]]))
    assert (cache.counters.misses, cache.counters.hits) == (3, 1)
    again = cache.embeddings(["c", "a"], encode)
    assert len(encode.calls) == 1  # nothing new to encode
    np.testing.assert_array_equal(again, np.stack([vector("c"), vector("a")]))
    cache.embeddings(["a", "d"], encode)  # a fresh label in a cached set: only it is encoded
    assert encode.calls[-1] == ["d"]
    assert (cache.counters.misses, cache.counters.hits, cache.counters.evictions) == (4, 4, 0)
    assert first.dtype == np.float32 and first.shape == (4, HIDDEN)


def test_the_budget_bounds_the_bytes_held_and_the_least_recently_used_go_first():
    cache, encode = LabelCache(3 * one_entry() + 10), Encoder()
    cache.embeddings(["label 0", "label 1", "label 2"], encode)
    assert len(cache) == 3 and cache.bytes_held == sum(entry_bytes(h, vector(h)) for h in ["label 0", "label 1",
                                                                                          "label 2"])
    cache.embeddings(["label 0"], encode)  # used: now the most recent
    cache.embeddings(["label 3"], encode)  # no room: the least recently used (label 1) goes
    assert "label 1" not in cache and all(h in cache for h in ["label 0", "label 2", "label 3"])
    assert cache.counters.evictions == 1 and cache.bytes_held <= cache.budget_bytes
    cache.embeddings(["label 1"], encode)  # evicted: a miss again
    assert encode.calls[-1] == ["label 1"] and cache.counters.evictions == 2


def test_a_request_larger_than_the_budget_still_gets_every_vector():
    cache, encode = LabelCache(2 * one_entry()), Encoder()
    labels = [f"label {i}" for i in range(6)]
    np.testing.assert_array_equal(cache.embeddings(labels, encode), np.stack([vector(h) for h in labels]))
    assert len(cache) == 2 and cache.counters.evictions == 4 and cache.bytes_held <= cache.budget_bytes
    tiny = LabelCache(10)  # smaller than any entry: nothing is stored, nothing evicted, answers still right
    np.testing.assert_array_equal(tiny.embeddings(["x", "x"], encode), np.stack([vector("x")] * 2))
    assert len(tiny) == 0 and tiny.bytes_held == 0 and tiny.counters.evictions == 0


def test_entries_are_copies_and_a_failed_encoding_changes_nothing():
    cache = LabelCache(1 << 20)
    batch = np.stack([vector("a"), vector("b")])
    cache.embeddings(["a", "b"], lambda missing: batch)
    batch[:] = 0  # the encoder's buffer reused: the cache kept its own rows
    np.testing.assert_array_equal(cache.embeddings(["b"], Encoder())[0], vector("b"))

    def broken(missing):
        raise RuntimeError("encoder unavailable")

    counters = (cache.counters.hits, cache.counters.misses)
    with pytest.raises(RuntimeError, match="encoder unavailable"):
        cache.embeddings(["a", "new"], broken)
    assert (cache.counters.hits, cache.counters.misses) == counters and "new" not in cache
    with pytest.raises(ValueError, match=r"shape \(1, 8\) for 2 hypotheses"):
        cache.embeddings(["x", "y"], lambda missing: np.stack([vector("x")]))
    with pytest.raises(ValueError, match="positive budget"):
        LabelCache(0)


def test_settings_round_trip_through_config_parameters():
    settings = LabelCacheSettings.from_mib(1.5, export_id="f00d", encoder_model="enc", encoder_output="emb")
    config = {"parameters": {k: {"string_value": v} for k, v in settings.to_parameters().items()}}
    assert settings.budget_bytes == 1572864
    assert LabelCacheSettings.from_model_config(config) == settings
    assert LabelCacheSettings.from_model_config({}) == LabelCacheSettings()  # an older export: no cache
    with pytest.raises(ValueError, match="negative"):
        LabelCacheSettings(budget_bytes=-1)


def test_cached_scores_equal_the_uncached_path_on_the_same_vectors():
    labels = ["bug report", "billing question", "praise"]
    text, hypotheses = vector("the text"), np.stack([vector(h) for h in labels])
    embedding = ScoringSettings(mode=ScoringMode.EMBEDDING)
    uncached = score_labels(embedding, np.vstack([text, hypotheses]), labels, False, np.zeros((0, 0), np.float32))
    cached = score_labels(embedding, text[None, :], labels, False, hypotheses)
    assert cached[0] == uncached[0]
    np.testing.assert_array_equal(cached[1], uncached[1])
    with pytest.raises(InputError, match="2 cached label embeddings and 1 encoder rows for 3 labels"):
        score_labels(embedding, text[None, :], labels, False, hypotheses[:2])
    with pytest.raises(ValueError, match="NLI mode"):
        score_labels(ScoringSettings(), np.zeros((3, 3), np.float32), labels, False, hypotheses)


def test_the_preprocess_sends_the_text_alone_when_the_cache_has_the_hypotheses(tokenizer_json):
    settings = ScoringSettings(mode=ScoringMode.EMBEDDING, max_length=32, default_template="about {}")
    cached = Preprocessor(settings, tokenizer_json, cached_hypotheses=True)
    uncached = Preprocessor(settings, tokenizer_json)
    out = cached.prepare(b"hello world", [b"a,b"])
    assert out.hypotheses == ["about a", "about b"] and out.encoded.input_ids.shape[0] == 1
    full = uncached.prepare(b"hello world", [b"a,b"]).encoded
    alone = cached.encode_hypotheses(out.hypotheses)
    # the same token rows as the uncached batch, each padded within its own batch
    for row in range(2):
        ids = full.input_ids[row + 1][full.attention_mask[row + 1] == 1]
        assert list(ids) == list(alone.input_ids[row][alone.attention_mask[row] == 1])
    with pytest.raises(ValueError, match="only embedding mode"):
        Preprocessor(ScoringSettings(), tokenizer_json, cached_hypotheses=True)


def test_warm_labels_file_forms_and_errors():
    assert parse_warm_labels('[{"labels": "a,b", "template": "x {}"}, {"labels": ["c", "d"]}]') == [
        WarmLabelSet(("a,b",), "x {}"), WarmLabelSet(("c", "d"))]
    for text, message in [
        ("{}", "non-empty JSON list"), ("[]", "non-empty JSON list"), ("[1", "not valid JSON"),
        ('[{"label": "a"}]', "entry 0: must be an object with 'labels'"),
        ('[{"labels": "a"}, {"labels": []}]', "entry 1: 'labels' must be a string or a non-empty list"),
        ('[{"labels": "a", "template": 3}]', "entry 0: 'template' must be a string"),
        ('[{"labels": "a", "extra": 1}]', "entry 0: unknown keys ['extra']"),
        (" " * (MAX_WARM_LABELS_BYTES + 1), "the limit is"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_warm_labels(text)


def test_warming_encodes_each_set_as_its_requests_will_and_reports_refused_sets(tokenizer_json):
    settings = ScoringSettings(mode=ScoringMode.EMBEDDING, max_length=32, max_labels=3)
    preprocessor = Preprocessor(settings, tokenizer_json, cached_hypotheses=True)
    cache, encode = LabelCache(1 << 20), Encoder()
    report = warm_cache(b'[{"labels": "a,b"}, {"labels": "a,b,c,d"}, {"labels": ["c"], "template": "no slot"},'
                        b' {"labels": "b, c", "template": "about {}"}]',
                        preprocessor.prepare, cache, lambda hypotheses: cache.embeddings(hypotheses, encode))
    assert report["errors"] == [
        "warm labels entry 1: CANDIDATE_LABELS: has 4 labels; the limit is 3 (max_labels)",
        "warm labels entry 2: HYPOTHESIS_TEMPLATE: must contain '{}' where the label goes, e.g. 'This text is "
        "about {}.'; got 'no slot'"]
    assert encode.calls == [["a", "b"], ["about b", "about c"]]
    assert report | {"errors": []} == {"label_sets": 4, "hypotheses": 4, "encoded": 4, "entries": 4,
                                       "bytes": cache.bytes_held, "errors": []}
    # what a request with the same labels and template then finds: every hypothesis cached
    request = preprocessor.prepare(b"some text", [b"b", b"c"], b"about {}")
    cache.embeddings(request.hypotheses, encode)
    assert len(encode.calls) == 2 and cache.counters.hits == 2
    with pytest.raises(InputError, match="warm_up: warm labels: not valid JSON"):
        warm_cache(b"nope", preprocessor.prepare, cache, lambda hypotheses: None)


@pytest.mark.parametrize("bad", ['[{"labels": "a"}, {"labels": 3}]', "not json"])
def test_the_launcher_refuses_a_bad_warm_labels_file_before_starting(tmp_path, capsys, bad):
    from zsc_server.serve import main

    path = tmp_path / "warm.json"
    path.write_text(bad, encoding="utf-8")
    assert main(["--repository", str(tmp_path / "nothing-here"), "--warm-labels", str(path)]) == 2
    assert "--warm-labels: warm labels" in capsys.readouterr().err
