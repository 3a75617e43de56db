"""Overload: far more concurrent requests than the server can hold get an immediate "busy" (gRPC
UNAVAILABLE / HTTP 503) instead of waiting without limit, and every request that is accepted gets its own
correct answer. Two bounds, each on a dedicated server that this 2-core machine overloads quickly: the
encoder's bounded queue (2 waiting requests, admission control off), and admission control, which refuses
before tokenizing when the work booked for the encoder would make a request wait longer than its budget."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.answers import assert_matches
from tests.conftest import STRUCTBERT_MAX_LENGTH, export_repository, model_statistics, start_server
from tests.reference import NliReference
from zsc_client import ServerUnavailableError, ZeroShotClient
from zsc_server.probe import check_health, is_busy

LABELS = [f"类别{i}" for i in range(48)]  # many pairs per request: each one keeps the encoder busy


@pytest.fixture(scope="module")
def small_queue(structbert, tmp_path_factory):
    repository = export_repository(str(structbert.checkpoint), tmp_path_factory.mktemp("overload") / "repository",
                                   max_length=STRUCTBERT_MAX_LENGTH, max_queue_size=2, preprocess_instances=4,
                                   admission_budget_ms="off")
    server = start_server("overload", repository)
    yield server
    server.stop()


def classify(server, index: int):
    text = f"第{index}号工单：我的快递还没到"
    started = time.perf_counter()
    try:
        with ZeroShotClient(server.grpc_url, "grpc", timeout_s=120) as client:
            return index, text, client.classify(text, LABELS), time.perf_counter() - started
    except ServerUnavailableError as exc:
        return index, text, exc, time.perf_counter() - started


def test_excess_requests_are_refused_at_once_and_accepted_ones_answered(small_queue, structbert):
    with ThreadPoolExecutor(max_workers=24) as pool:
        outcomes = list(pool.map(lambda i: classify(small_queue, i), range(24)))
    accepted = [o for o in outcomes if not isinstance(o[2], Exception)]
    refused = [o for o in outcomes if isinstance(o[2], Exception)]
    assert accepted and refused, f"{len(accepted)} accepted, {len(refused)} refused: the queue bound did not act"
    for _, _, error, _ in refused:
        assert error.status == "StatusCode.UNAVAILABLE" and "queue" in error.message.lower(), error.message
    # refusals come quickly: faster than the slowest accepted answer, which waited its turn
    assert max(o[3] for o in refused) < max(o[3] for o in accepted)
    reference = NliReference(structbert.checkpoint, STRUCTBERT_MAX_LENGTH, entailment=0, contradiction=2,
                             modelscope_layout=True)
    for _, text, result, _ in accepted[:4]:  # each accepted answer is its own request's
        assert result.text == text
        assert_matches(result, *reference(text=text, candidate_labels=LABELS))


def body(text: str) -> bytes:
    return json.dumps({"inputs": [
        {"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [text]},
        {"name": "CANDIDATE_LABELS", "datatype": "BYTES", "shape": [len(LABELS)], "data": LABELS},
    ]}).encode()


def post(server, text: str = "我的快递还没到") -> tuple[int, str]:
    """One plain KServe v2 JSON request of LABELS: (HTTP status, error text). The response cache answers a
    text it has answered before: send a new one to reach the models."""
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/zero_shot/infer", data=body(text),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_http_says_503_when_busy(small_queue):
    # HTTP's frontend admits fewer requests at once than gRPC's, so gRPC traffic fills the queue too
    with ThreadPoolExecutor(max_workers=52) as pool:
        flood = [pool.submit(classify, small_queue, i) for i in range(40)]
        statuses = list(pool.map(lambda i: post(small_queue, f"HTTP 请求 {i}"), range(12)))
        for future in flood:
            future.result()
    codes = {code for code, _ in statuses}
    # how many get through depends on timing; what matters: busy is a 503 that says why, never a 500
    assert 503 in codes and codes <= {200, 503}, statuses
    assert all("queue" in text for code, text in statuses if code == 503)



def test_the_health_probe_passes_while_the_queue_refuses(structbert, tmp_path):
    """The health probe (liveness in Kubernetes and compose, the launcher's check) on a server whose queue
    refuses every request: busy is not dead, and restarting the server would drop every request it holds.
    A 1 ms queue timeout, shorter than the 2 ms batching delay, makes Triton refuse each request as busy
    ("Request timeout expired", 503) every time, where a flood fills the queue only by chance of timing."""
    from zsc_server.probe import main as probe_main

    repository = export_repository(str(structbert.checkpoint), tmp_path / "repository",
                                   max_length=STRUCTBERT_MAX_LENGTH, queue_timeout_ms="1", admission_budget_ms="off")
    server = start_server("overload-timeout", repository)
    try:
        statuses = [post(server) for _ in range(3)]
        assert all(status == 503 and "timeout expired" in text for status, text in statuses), statuses
        assert check_health(f"http://{server.http_url}", "zero_shot", 30).ok
        assert probe_main(["--url", f"http://{server.http_url}"]) == 0
    finally:
        server.stop()


@pytest.fixture(scope="module")
def admission_server(structbert, tmp_path_factory):
    """Admission control with a 5 ms budget: a flood of 48-label requests books more encoder work than that,
    so new requests are refused; the encoder queue's budget is long (10 s)."""
    repository = export_repository(str(structbert.checkpoint), tmp_path_factory.mktemp("admission") / "repository",
                                   max_length=STRUCTBERT_MAX_LENGTH, preprocess_instances=4,
                                   admission_budget_ms="5",
                                   # so long that any refusal is admission control's, never the encoder queue's
                                   queue_timeout_ms="10000")
    server = start_server("admission", repository)
    yield server
    server.stop()


def encoder_requests(server) -> int:
    stats = model_statistics(server, "encoder")["inference_stats"]
    # answered, or failed there (a refusal by the encoder's own queue counts as failed)
    return int(stats["success"]["count"]) + int(stats["fail"]["count"])


def test_admission_control_refuses_before_tokenizing_and_recovers(admission_server, structbert):
    before = encoder_requests(admission_server)
    with ThreadPoolExecutor(max_workers=24) as pool:
        outcomes = list(pool.map(lambda i: classify(admission_server, i), range(96)))
    accepted = [o for o in outcomes if not isinstance(o[2], Exception)]
    refused = [o for o in outcomes if isinstance(o[2], Exception)]
    assert accepted and refused, f"{len(accepted)} accepted, {len(refused)} refused: admission did not act"
    for _, _, error, _ in refused:
        assert error.status == "StatusCode.UNAVAILABLE", error.message
        assert is_busy(503, error.message), error.message  # the gate's, or the queue in front of the preprocess
    # refused in the preprocess, before tokenizing: the encoder saw the accepted requests and no others
    assert encoder_requests(admission_server) - before == len(accepted)
    reference = NliReference(structbert.checkpoint, STRUCTBERT_MAX_LENGTH, entailment=0, contradiction=2,
                             modelscope_layout=True)
    for _, text, result, _ in accepted[:4]:
        assert result.text == text
        assert_matches(result, *reference(text=text, candidate_labels=LABELS))
    # once the flood is gone, requests are admitted again: the encoder struck off what it ran
    started, outcome = time.monotonic(), None
    while outcome != (200, "") and time.monotonic() - started < 5:
        outcome = post(admission_server, f"风平浪静之后的请求 {time.monotonic()}")
        time.sleep(0.05)
    assert outcome == (200, ""), outcome
    assert check_health(f"http://{admission_server.http_url}", "zero_shot", 30).ok


def test_http_refusal_by_admission_is_a_503_the_probe_counts_as_busy(admission_server):
    with ThreadPoolExecutor(max_workers=25) as pool:  # gRPC and HTTP requests interleaved, all at once
        flood = [pool.submit(classify, admission_server, i) for i in range(60)]
        posts = [pool.submit(post, admission_server, f"HTTP 请求 {i}") for i in range(40)]
        statuses = [future.result() for future in posts]
        for future in flood:
            future.result()
    refused = [text for code, text in statuses if code == 503]
    # the gate's refusals, or Triton's queue's, and the probe counts each as busy, not dead
    assert refused and all(is_busy(503, text) for text in refused), statuses
    assert {code for code, _ in statuses} <= {200, 503}
