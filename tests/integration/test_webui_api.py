"""The WebUI's JSON API (zsc_client.webui, on aiohttp's test server) against the real local Triton."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

pytest.importorskip("aiohttp", reason="the WebUI needs aiohttp: pip install 'zsc-client[webui]'")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from zsc_client.webui.app import CONTENT_SECURITY_POLICY, MAX_BODY_BYTES, create_app  # noqa: E402
from zsc_server.triton_process import free_ports  # noqa: E402

TEXT = "我的快递三天了还没到，请帮我查一下物流。"


def webui_url(served, protocol: str) -> str:
    return served.server.grpc_url if protocol == "grpc" else served.server.http_url


def call(app, *requests: tuple) -> list[tuple[int, dict]]:
    """Send (method, path, json body or raw bytes) requests to the app, all at once; (status, JSON) each."""

    async def run():
        async with TestClient(TestServer(app)) as client:
            async def one(method, path, body=None):
                payload = ({"data": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes)
                           else {"json": body})
                async with client.request(method, path, **payload) as response:
                    return response.status, await response.json()

            return await asyncio.gather(*(one(*request) for request in requests))

    return asyncio.run(run())


def classify(app, body) -> tuple[int, dict]:
    [answer] = call(app, ("POST", "/api/classify", body))
    return answer


def test_classify_matches_the_client(structbert, protocol):
    app = create_app(webui_url(structbert, protocol), protocol)
    status, body = classify(app, {"text": TEXT, "labels": "咨询, 投诉，建议"})
    assert status == 200, body
    with structbert.client(protocol) as client:
        expected = client.classify(TEXT, "咨询,投诉，建议")
    assert body["labels"] == expected.labels
    assert body["scores"] == pytest.approx(expected.scores, abs=1e-6)
    assert body["scores"] == sorted(body["scores"], reverse=True)
    assert body["multi_label"] is False and body["hypothesis_template"] is None and body["text"] == TEXT
    assert body["triton_round_trip_ms"] > 0
    # the shared server may have answered this text before: then from Triton's response cache, with no time
    assert body["inside_triton_ms"] > 0 if not body["from_cache"] else body["inside_triton_ms"] is None


def test_classify_with_template_and_multi_label(structbert):
    app = create_app(structbert.server.grpc_url)
    status, body = classify(app, {"text": TEXT, "labels": ["咨询", "投诉", "建议"],
                                  "hypothesis_template": "这是一条{}。", "multi_label": True})
    assert status == 200, body
    with structbert.client() as client:
        expected = client.classify(TEXT, ["咨询", "投诉", "建议"], "这是一条{}。", multi_label=True)
    assert body["labels"] == expected.labels
    assert body["scores"] == pytest.approx(expected.scores, abs=1e-6)
    assert body["multi_label"] is True and body["hypothesis_template"] == "这是一条{}。"


BAD = {
    "empty text": ({"text": "  ", "labels": "咨询"}, "text", "is empty"),
    "no labels": ({"text": TEXT, "labels": " ，, "}, "labels", "no candidate labels"),
    "template without {}": ({"text": TEXT, "labels": "咨询", "hypothesis_template": "这是一条"},
                            "hypothesis_template", "must contain {}"),
    "multi_label not a boolean": ({"text": TEXT, "labels": "咨询", "multi_label": "yes"}, "multi_label",
                                  "must be true or false"),
    # limits set at export are Triton's to check: its refusal comes back naming the field
    "more labels than the export allows": ({"text": TEXT, "labels": [f"类型{i}" for i in range(65)]},
                                           "labels", "has 65 labels; the limit is 64"),
    "text over Triton's size limit": ({"text": "投" * 30_000, "labels": "咨询"}, "text",
                                      "is 90000 bytes; the limit is 65536"),
    "not JSON": (b'{"text": "x", ', None, "the body is not valid JSON"),
    "not UTF-8": (b'{"text": "\xff"}', None, "the body is not UTF-8"),
    "a JSON array": ([TEXT], None, "the body must be a JSON object, got an array"),
    # JSON escapes that decode to a lone surrogate: text no UTF-8 request can carry
    "lone surrogate in the text": (b'{"text": "\\ud800", "labels": "a"}', "text", "is not valid Unicode"),
    "lone surrogate in a label": (b'{"text": "x", "labels": ["a", "\\udc00"]}', "labels",
                                  "label 1 is not valid Unicode"),
    "lone surrogate in the template": (b'{"text": "x", "labels": "a", "hypothesis_template": "{}\\ud800"}',
                                       "hypothesis_template", "is not valid Unicode"),
    "an integer of 5,000 digits": (b'{"text": ' + b"1" * 5000 + b"}", None, "a value JSON cannot give here"),
    "arrays nested 100,000 deep": (b"[" * 100_000, None, "nests arrays or objects too deeply"),
    # one element is a label string to Triton, split on commas: refused rather than answered as two labels
    "one label holding a comma": ({"text": TEXT, "labels": ["New York, USA"]}, "labels",
                                  "give each label as its own list item"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_a_400_naming_the_field(structbert, case):
    request, field, message = BAD[case]
    app = create_app(structbert.server.grpc_url)
    [(status, body), (good_status, _)] = call(
        app, ("POST", "/api/classify", request), ("POST", "/api/classify", {"text": TEXT, "labels": "咨询,投诉"}))
    assert status == 400, body
    assert body["field"] == field
    assert message in body["error"]
    assert not body["error"].startswith(("in ensemble", "TEXT", "CANDIDATE_LABELS"))  # Triton's prefixes dropped
    assert good_status == 200  # a refused request does not disturb the next ones


def test_a_body_not_sent_as_json_is_a_415(structbert):
    """A form or text/plain POST needs no CORS preflight: another site's page could send one through a
    visitor's browser."""
    async def run():
        async with TestClient(TestServer(create_app(structbert.server.grpc_url))) as client:
            body = json.dumps({"text": TEXT, "labels": "咨询,投诉"})
            async with client.post("/api/classify", data=body, headers={"Content-Type": "text/plain"}) as response:
                return response.status, await response.json()

    status, body = asyncio.run(run())
    assert status == 415, body
    assert "Content-Type: application/json" in body["error"]


def test_huge_body_is_a_413(structbert):
    app = create_app(structbert.server.grpc_url)
    huge = json.dumps({"text": "x" * (MAX_BODY_BYTES + 1), "labels": "a"}).encode()
    status, body = classify(app, huge)
    assert status == 413
    assert f"larger than the limit of {MAX_BODY_BYTES} bytes" in body["error"]


def test_triton_down_is_a_503_with_a_clear_message(protocol):
    [port] = free_ports(1)
    app = create_app(f"127.0.0.1:{port}", protocol)
    started = time.monotonic()
    [(status, body), (health_status, health)] = call(
        app, ("POST", "/api/classify", {"text": TEXT, "labels": "咨询,投诉"}), ("GET", "/api/health"))
    assert time.monotonic() - started < 10  # refused connections fail fast, not at the 30 s timeout
    assert status == 503, body
    assert body["error"].startswith(f"Triton is not reachable at 127.0.0.1:{port} ({protocol}): ")
    assert "Is the server running" in body["error"]
    assert body["field"] is None
    assert health_status == 503
    assert health == {"ready": False, "triton": f"127.0.0.1:{port}", "protocol": protocol, "model": "zero_shot"}


def test_concurrent_requests_each_get_their_own_answer(structbert):
    label_sets = ["咨询,投诉,建议", "物流,售后", "表扬,投诉,咨询,其他", "退款,换货,维修"]
    requests = [{"text": f"{TEXT} 第{i}单", "labels": label_sets[i % len(label_sets)], "multi_label": i % 3 == 0}
                for i in range(24)]
    answers = call(create_app(structbert.server.grpc_url), *(("POST", "/api/classify", r) for r in requests))
    with structbert.client() as client:
        for request, (status, body) in zip(requests, answers):
            assert status == 200, body
            expected = client.classify(request["text"], request["labels"], multi_label=request["multi_label"])
            assert body["text"] == request["text"]
            assert body["labels"] == expected.labels
            assert body["scores"] == pytest.approx(expected.scores, abs=1e-6)


def test_health_page_and_json_errors(structbert):
    async def run():
        async with TestClient(TestServer(create_app(structbert.server.http_url, "http"))) as client:
            health = await client.get("/api/health")
            page = await client.get("/")
            script = await client.get("/static/app.js")
            missing = await client.get("/api/nothing")
            wrong_method = await client.get("/api/classify")
            return (health.status, await health.json(), page.status, page.headers, await page.text(),
                    script.status, missing.status, await missing.json(), wrong_method.status,
                    await wrong_method.json())

    (health_status, health, page_status, page_headers, page, script_status, missing_status, missing,
     wrong_status, wrong) = asyncio.run(run())
    assert health_status == 200
    assert health == {"ready": True, "triton": structbert.server.http_url.removeprefix("http://"),
                      "protocol": "http", "model": "zero_shot"}
    assert page_status == 200 and '<script src="/static/app.js"' in page
    assert page_headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert script_status == 200
    assert missing_status == 404 and missing["error"] == "Not Found: GET /api/nothing"
    assert wrong_status == 405 and wrong["error"].startswith("Method Not Allowed")
