"""deploy/edge/haproxy.cfg: a real haproxy in front of a real launcher (`make serve`) serving the tiny
StructBERT. Answers pass through on both protocols unchanged; beyond its concurrency limit and its queue it
refuses as busy, in the forms the client and HTTP callers know (gRPC UNAVAILABLE with a message; HTTP 503
with Retry-After and a KServe JSON error), and with no server behind it says so the same way. Skipped,
saying why, where haproxy is not installed; `.ci/run` installs it and sets ZSC_REQUIRE_HAPROXY, so that
there a missing haproxy fails instead."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from loadtest.server import Target
from tests.conftest import launcher_server, serve_launcher, settles
from zsc_client import AsyncZeroShotClient, ServerUnavailableError, ZeroShotClient
from zsc_server.serve import ports_in_use
from zsc_server.triton_process import free_ports

EDGE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "edge" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
BUSY = "the server is at the edge proxy's concurrency limit"  # more than the limit and the queue
UNAVAILABLE = "did not take the call in time"  # waited longer than the queue allows, or no server
TEXT, LABELS = "我的快递三天了还没到", "咨询,投诉,建议"

if HAPROXY is None and os.environ.get("ZSC_REQUIRE_HAPROXY"):
    raise RuntimeError("ZSC_REQUIRE_HAPROXY is set but haproxy is not installed (apt-get install haproxy)")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed (apt-get install haproxy)")


@contextlib.contextmanager
def running_edge(upstream_http: int, upstream_grpc: int, **settings: str):
    """haproxy with deploy/edge/haproxy.cfg on free ports in front of the upstream ports: (gRPC, HTTP) port."""
    grpc_port, http_port = free_ports(2)
    environment = {**os.environ, "ZSC_EDGE_GRPC_PORT": str(grpc_port), "ZSC_EDGE_HTTP_PORT": str(http_port),
                   "ZSC_UPSTREAM_GRPC_PORT": str(upstream_grpc), "ZSC_UPSTREAM_HTTP_PORT": str(upstream_http),
                   **settings}
    proxy = subprocess.Popen([HAPROXY, "-db", "-f", str(EDGE_CONFIG)], env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        both = [grpc_port, http_port]
        assert settles(lambda: ports_in_use("127.0.0.1", both) == both, timeout_s=10), (
            proxy.stdout.read() if proxy.poll() is not None else "")
        yield grpc_port, http_port
    finally:
        proxy.terminate()
        proxy.wait(10)


@dataclasses.dataclass
class Edge:
    grpc_port: int
    http_port: int
    upstream_grpc: int  # the launcher's gRPC front
    metrics_url: str  # tritonserver's, behind the launcher
    launcher_pid: int


@pytest.fixture(scope="module")
def edge(structbert):
    """haproxy with one call at a time to a launcher and one waiting, so that a burst meets both bounds."""
    with serve_launcher(structbert.repository) as (process, line, upstream_grpc):
        upstream_http = int(re.search(r"HTTP http://\S+:(\d+)", line).group(1))
        metrics_url = re.search(r"metrics (http://\S+)", line).group(1)
        with running_edge(upstream_http, upstream_grpc, ZSC_EDGE_MAXCONN="1", ZSC_EDGE_QUEUE="1") as ports:
            yield Edge(*ports, upstream_grpc, metrics_url, process.pid)


def test_the_configuration_is_valid():
    checked = subprocess.run([HAPROXY, "-c", "-f", str(EDGE_CONFIG)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "WARNING" not in checked.stdout + checked.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_answers_pass_through_unchanged(edge, protocol):
    with ZeroShotClient(f"127.0.0.1:{edge.upstream_grpc}") as direct:
        expected = direct.classify(TEXT, LABELS)
    with ZeroShotClient(f"127.0.0.1:{edge.grpc_port if protocol == 'grpc' else edge.http_port}", protocol) as client:
        answer = client.classify(TEXT, LABELS)
    assert answer.labels == expected.labels
    assert answer.scores == pytest.approx(expected.scores, abs=1e-6)


def test_a_grpc_burst_beyond_the_limit_is_refused_as_busy_and_the_rest_answered(edge):
    async def burst() -> list[object]:
        async with AsyncZeroShotClient(f"127.0.0.1:{edge.grpc_port}") as client:
            return await asyncio.gather(*(client.classify(f"{TEXT} {i}", LABELS) for i in range(64)),
                                        return_exceptions=True)

    outcomes = asyncio.run(burst())
    refused = [o for o in outcomes if isinstance(o, Exception)]
    answered = [o for o in outcomes if not isinstance(o, Exception)]
    assert all(isinstance(error, ServerUnavailableError) and (BUSY in str(error) or UNAVAILABLE in str(error))
               for error in refused), refused[:3]
    assert any(BUSY in str(error) for error in refused) and answered
    assert all(sorted(result.labels) == sorted(LABELS.split(",")) for result in answered)


def test_an_http_burst_beyond_the_limit_gets_503_with_retry_after_and_a_json_error(edge):
    body = json.dumps({"inputs": [
        {"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": [TEXT]},
        {"name": "CANDIDATE_LABELS", "shape": [1], "datatype": "BYTES", "data": [LABELS]},
    ]})

    def post(_: int) -> tuple[int, str | None, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", edge.http_port, timeout=30)
        try:
            connection.request("POST", "/v2/models/zero_shot/infer", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.getheader("Retry-After"), response.read()
        finally:
            connection.close()

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(post, range(64)))
    assert {status for status, _, _ in outcomes} <= {200, 503}
    refused = [(retry_after, json.loads(payload)) for status, retry_after, payload in outcomes if status == 503]
    assert len(refused) < len(outcomes) and any(BUSY in error["error"] for _, error in refused)
    assert all(retry_after == "1" and (BUSY in error["error"] or UNAVAILABLE in error["error"])
               for retry_after, error in refused)


def test_with_no_server_behind_it_the_edge_answers_unavailable_on_both_protocols():
    with running_edge(*free_ports(2)) as (grpc_port, http_port):
        with ZeroShotClient(f"127.0.0.1:{grpc_port}") as client, pytest.raises(ServerUnavailableError,
                                                                               match=UNAVAILABLE):
            client.classify(TEXT, LABELS)
        connection = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        connection.request("GET", "/v2/health/ready")
        response = connection.getresponse()
        assert response.status == 503 and response.getheader("Retry-After") == "1"
        assert UNAVAILABLE in json.loads(response.read())["error"]


def test_a_load_test_through_the_edge_finds_the_tritonserver_behind_it(edge):
    """The soak and the bench sample tritonserver's CPU and memory: behind the edge, by its metrics port."""
    target = Target.from_urls(f"127.0.0.1:{edge.grpc_port}", metrics_url=edge.metrics_url)
    assert target.server_pid() == launcher_server(edge.launcher_pid)
