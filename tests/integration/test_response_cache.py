"""Triton's response cache on the ensemble (the server runs with --cache-config, the ensemble opts in):
an identical request (text, labels, template, mode) is a hit with the identical answer; changing any
one of them is a miss and gets its own answer."""

from __future__ import annotations

import uuid

from tests.answers import assert_matches
from tests.conftest import model_statistics


def cache_counts(server) -> tuple[int, int]:
    stats = model_statistics(server, "zero_shot")["inference_stats"]
    return stats["cache_hit"]["count"], stats["cache_miss"]["count"]


def test_identical_requests_hit_and_any_difference_misses(structbert, protocol):
    text = f"我的快递三天了还没到 {uuid.uuid4().hex[:8]}"  # unique: no other test can have cached it
    request = dict(text=text, candidate_labels=["咨询", "投诉", "建议"])
    with structbert.client(protocol) as client:
        hits, misses = cache_counts(structbert.server)
        first = client.classify(**request)
        assert cache_counts(structbert.server) == (hits, misses + 1)
        again = client.classify(**request)
        assert cache_counts(structbert.server) == (hits + 1, misses + 1)
        assert (again.labels, again.scores) == (first.labels, first.scores)

        variants = [dict(request, hypothesis_template="这是{}"), dict(request, multi_label=True),
                    dict(request, candidate_labels=["咨询", "投诉"]), dict(request, text=text + "!")]
        for number, variant in enumerate(variants, start=1):
            answer = client.classify(**variant)
            assert cache_counts(structbert.server) == (hits + 1, misses + 1 + number), variant
            assert_matches(answer, *structbert.reference(**variant))  # its own answer, not the cached one
