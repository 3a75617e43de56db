"""The label cache against real tritonservers serving the real MiniLM (embedding mode), over gRPC and HTTP:
answers equal to those of a server without the cache, misses that become hits, a fresh label in a cached
set, a changed template, eviction under a tiny budget, the launcher's warm-up, and a preprocess stub killed
while the cache is warm. Counts come from the server's own metrics (zsc_label_cache_*, and the encoder's
nv_inference_count: rows it encoded, so "only the text went through the encoder" is measured, not assumed).

Texts carry a fresh tag in every test so that Triton's response cache never answers instead of the models.
"""

from __future__ import annotations

import json
import signal
import time
import uuid

import numpy as np
import pytest

from loadtest.server_metrics import scrape
from tests.answers import assert_matches
from tests.conftest import Printed, serve_launcher
from tests.faults import stub
from tests.reference import parse_labels
from zsc_client import ZeroShotClient
from zsc_server.probe import LABELS as PROBE_LABELS
from zsc_server.warm_up import warm_label_cache

EQUAL = 1e-6  # cached vs uncached answers
SERIES = {"hits": "zsc_label_cache_hits", "misses": "zsc_label_cache_misses",
          "evictions": "zsc_label_cache_evictions", "bytes": "zsc_label_cache_bytes",
          "entries": "zsc_label_cache_entries", "budget": "zsc_label_cache_budget_bytes"}


def counts(metrics_url: str) -> dict[str, float]:
    """The label cache's series summed over the preprocess instances, and the rows the encoder encoded."""
    totals = dict.fromkeys([*SERIES, "encoder_rows"], 0.0)
    names = {name: key for key, name in SERIES.items()}
    for name, labels, value in scrape(metrics_url):
        if name in names and labels.get("model") == "preprocess":
            totals[names[name]] += value
        elif name == "nv_inference_count" and labels.get("model") == "encoder":
            totals["encoder_rows"] += value
    return totals


def metrics_url(served) -> str:
    return f"http://127.0.0.1:{served.server.metrics_port}/metrics"


def assert_changed(url: str, before: dict, timeout_s: float = 3.0, **expected: float) -> None:
    """The counts changed by `expected` since `before`. Polled briefly: the encoder's statistics are recorded
    as its requests are released, a moment after the answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = counts(url)
        changed = {key: now[key] - before[key] for key in expected}
        if changed == expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert changed == expected


def tagged(text: str) -> str:
    return f"{text} [{uuid.uuid4().hex[:8]}]"


CASES = [
    dict(text="The app crashes every time I open the settings page.",
         candidate_labels=["bug report", "billing question", "praise", "feature request"]),
    dict(text="I was charged twice for my subscription this month.",
         candidate_labels="bug report, billing question, praise", hypothesis_template="This message is a {}."),
    dict(text="Great service, thank you so much! " * 60, candidate_labels=["praise", "complaint"]),  # truncated
    dict(text="我的快递三天了还没到，请帮我查一下物流。", candidate_labels=["咨询", "投诉", "建议"]),
    dict(text="Where is my parcel?", candidate_labels=["delivery"]),
]


def test_cached_and_uncached_answers_are_equal(embedding, embedding_uncached, protocol):
    """Every hypothesis from the cache (both instances warmed first): the same labels in the same order and
    scores within 1e-6 of a server without the cache; the cached server's encoder saw the texts alone."""
    warm = [{"labels": case["candidate_labels"], "template": case.get("hypothesis_template", "{}")}
            for case in CASES]
    result = warm_label_cache(embedding.server.http_url, json.dumps(warm), embedding.server.admin_secret)
    assert sorted(result.reports) == result.instances == ["preprocess_0_0", "preprocess_0_1"]
    assert result.errors == []
    cases = [dict(case, text=tagged(case["text"])) for case in CASES]
    labels = sum(len(parse_labels(case["candidate_labels"])) for case in cases)
    cached_before, uncached_before = counts(metrics_url(embedding)), counts(metrics_url(embedding_uncached))
    with embedding.client(protocol) as cached, embedding_uncached.client(protocol) as uncached:
        for case in cases:
            with_cache, without = cached.classify(**case), uncached.classify(**case)
            assert with_cache.labels == without.labels, case
            assert np.max(np.abs(np.subtract(with_cache.scores, without.scores))) <= EQUAL, case
            assert_matches(with_cache, *embedding.reference(**case))
    assert_changed(metrics_url(embedding), cached_before, hits=labels, misses=0, encoder_rows=len(cases))
    # without the cache: the text and every hypothesis through the encoder step, and no cache series at all
    uncached_rows = len(cases) + labels
    assert_changed(metrics_url(embedding_uncached), uncached_before, encoder_rows=uncached_rows)
    assert counts(metrics_url(embedding_uncached))["budget"] == 0
    uncached_server = embedding_uncached.server
    assert warm_label_cache(uncached_server.http_url, json.dumps(warm), uncached_server.admin_secret) is None


def classify(served, client, text: str, labels: list[str], template: str | None = None):
    """Classify, and check the answer against the PyTorch reference."""
    kwargs = dict(text=text, candidate_labels=labels)
    if template:
        kwargs["hypothesis_template"] = template
    result = client.classify(**kwargs)
    assert_matches(result, *served.reference(**kwargs))
    return result


def test_misses_become_hits_and_a_fresh_label_in_a_cached_set_misses_alone(embedding_small_cache, protocol):
    served, url = embedding_small_cache, metrics_url(embedding_small_cache)
    tag = uuid.uuid4().hex[:6]
    labels = [f"refund {tag}", f"delivery {tag}", f"praise {tag}"]
    with served.client(protocol) as client:
        before = counts(url)
        classify(served, client, tagged("Where is my order?"), labels)
        # first sight: the three hypotheses encoded through one BLS call, plus the text in the encoder step
        assert_changed(url, before, misses=3, hits=0, encoder_rows=4)
        before = counts(url)
        classify(served, client, tagged("I want my money back."), labels)
        assert_changed(url, before, misses=0, hits=3, encoder_rows=1)
        before = counts(url)
        classify(served, client, tagged("The courier was lovely."), [labels[0], f"billing {tag}", *labels[1:]])
        assert_changed(url, before, misses=1, hits=3, encoder_rows=2)


def test_a_changed_template_misses_then_hits(embedding_small_cache, protocol):
    served, url = embedding_small_cache, metrics_url(embedding_small_cache)
    tag = uuid.uuid4().hex[:6]
    labels = [f"bug {tag}", f"invoice {tag}"]
    with served.client(protocol) as client:
        classify(served, client, tagged("The page is blank."), labels)
        for expected in ({"misses": 2, "hits": 0}, {"misses": 0, "hits": 2}):
            before = counts(url)
            classify(served, client, tagged("The page is blank."), labels, "This message is about {}.")
            assert_changed(url, before, **expected)


def test_a_tiny_budget_evicts_the_least_recently_used_and_answers_stay_right(embedding_small_cache, protocol):
    served, url = embedding_small_cache, metrics_url(embedding_small_cache)
    tag = uuid.uuid4().hex[:6]
    topics = [f"topic {i} {tag}" for i in range(12)]
    with served.client(protocol) as client:
        before = counts(url)
        # more hypotheses than the cache holds: the request still gets all twelve, correctly scored
        classify(served, client, tagged("Tell me about the topics."), topics)
        after = counts(url)
        assert after["misses"] - before["misses"] == 12
        assert after["bytes"] <= after["budget"] and 4 <= after["entries"] <= 9
        assert after["evictions"] - before["evictions"] >= 12 - after["entries"]
        for label, expected in ((topics[-1], {"hits": 1, "misses": 0}), (topics[0], {"hits": 0, "misses": 1})):
            before = counts(url)  # the most recent hypothesis is kept, the oldest was evicted
            classify(served, client, tagged("And this one?"), [label])
            assert_changed(url, before, **expected)


def test_the_launcher_warms_every_instance_and_rewarms_after_a_stub_dies(embedding, tmp_path):
    """`--warm-labels`: both preprocess instances hold the label sets when the launcher says ready, so the
    first requests are all hits. A preprocess stub killed while the caches are warm: the launcher reloads the
    model (both instances, new processes), warms them again, and everything else starts cold (misses) and is
    answered correctly."""
    warm_sets = [{"labels": ["bug report", "billing question", "praise"], "template": "This message is a {}."},
                 {"labels": PROBE_LABELS}]  # the launcher's health probe classifies with these after a reload
    warm_file = tmp_path / "warm.json"
    warm_file.write_text(json.dumps(warm_sets, ensure_ascii=False), encoding="utf-8")
    warm_hypotheses = 3 + len(PROBE_LABELS)
    with serve_launcher(embedding.repository, "--probe-interval-s", "60", "--warm-labels", str(warm_file)) as (
            launcher, ready, grpc_port):
        printed = Printed(launcher)
        metrics = metrics_from_launcher(launcher)
        client = ZeroShotClient(f"127.0.0.1:{grpc_port}", "grpc")
        at_start = counts(metrics)
        assert at_start["entries"] == 2 * warm_hypotheses and at_start["misses"] == 2 * warm_hypotheses
        for _ in range(4):  # whichever instance answers, it is warm
            classify(embedding, client, tagged("I was charged twice."), warm_sets[0]["labels"],
                     warm_sets[0]["template"])
        cold = ["refund", "delivery", "account"]
        classify(embedding, client, tagged("Where is my parcel?"), cold)
        assert_changed(metrics, at_start, hits=12, misses=3)

        answered = ensemble_answers(metrics)
        killed = stub(launcher.pid, "preprocess_0_0")
        killed.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum("label cache warmed" in line for line in printed) < 1:
            time.sleep(0.1)
        assert any("reloaded preprocess" in line for line in printed), "".join(printed)
        assert any("label cache warmed" in line for line in printed), "".join(printed)
        # the launcher's probe after the reload (its labels are warm): the one request sent meanwhile
        while time.monotonic() < deadline and ensemble_answers(metrics) < answered + 1:
            time.sleep(0.1)
        reloaded = counts(metrics)
        assert reloaded["entries"] == 2 * warm_hypotheses  # new caches: the warm sets only
        for _ in range(2):
            classify(embedding, client, tagged("I was charged twice."), warm_sets[0]["labels"],
                     warm_sets[0]["template"])
        classify(embedding, client, tagged("Where is my parcel?"), cold)  # cold again, still right
        assert_changed(metrics, reloaded, hits=6, misses=3)
        client.close()
        assert launcher.poll() is None


def ensemble_answers(metrics_url: str) -> float:
    """The requests zero_shot has answered (Triton's counter)."""
    return sum(value for name, labels, value in scrape(metrics_url)
               if name == "nv_inference_request_success" and labels.get("model") == "zero_shot")


def metrics_from_launcher(launcher) -> str:
    """The launcher's metrics URL, from its command line."""
    args = launcher.args
    return f"http://127.0.0.1:{args[args.index('--metrics-port') + 1]}/metrics"


@pytest.fixture(scope="module")
def refusing(tmp_path_factory):
    """MiniLM whose encoder queue refuses every request: a 1 ms queue timeout, shorter than the 2 ms
    batching delay. Admission control off: with a budget of half that queue's, whether it or the queue refused
    first would depend on when the requests came."""
    from tests.conftest import export_repository, start_server

    repository = export_repository("offline-minilm", tmp_path_factory.mktemp("refusing") / "repository",
                                   max_length=64, queue_timeout_ms="1", admission_budget_ms="off")
    server = start_server("label-cache-refused", repository)
    yield server
    server.stop()


def test_a_refused_label_encoding_is_busy_not_an_internal_error(refusing, protocol):
    """The encoder's queue refusing the BLS call for new labels answers like a refusal of the ensemble's own
    encoder step: UNAVAILABLE / HTTP 503, "busy, retry", which the client and the health probe take as such
    (the Python backend reports every BLS error as INTERNAL; the preprocess tells busy apart)."""
    from zsc_client import ServerUnavailableError
    from zsc_server.probe import check_health

    url = refusing.grpc_url if protocol == "grpc" else refusing.http_url
    with ZeroShotClient(url, protocol) as client:
        with pytest.raises(ServerUnavailableError) as refused:
            client.classify("Where is my parcel?", [f"delivery {uuid.uuid4().hex[:6]}", "refund"])
    assert "encoding labels with 'encoder': Request timeout expired" in refused.value.message
    assert refused.value.status in ("StatusCode.UNAVAILABLE", "503")
    assert check_health(f"http://{refusing.http_url}", "zero_shot", 30).ok  # busy, not dead
