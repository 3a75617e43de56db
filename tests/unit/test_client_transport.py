"""The client's transport behaviour against real sockets that misbehave (no Triton needed): deadlines, connection
pools, and what a caller is told when the address holds no server of the expected protocol."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time

import pytest

from zsc_client import AsyncZeroShotClient, ServerUnavailableError, ZeroShotClient


@pytest.fixture
def silent_port():
    """A port whose listen queue takes connections that nobody ever answers (a hung server)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def closing_port():
    """A port that reads each connection's request and closes it unanswered."""
    listener = socket.create_server(("127.0.0.1", 0))

    def close_each() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.recv(1 << 16)
            connection.close()

    threading.Thread(target=close_each, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def http_port():
    """A plain HTTP/1 server: what a gRPC client meets when pointed at Triton's HTTP port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_grpc_health_and_readiness_end_within_the_timeout_asked_for(silent_port):
    # without a deadline of their own, gRPC's connect timeout (about 20 s) applied to each check
    client = ZeroShotClient(f"127.0.0.1:{silent_port}", "grpc", timeout_s=1)
    started = time.monotonic()
    report = client.health()
    assert not (report["live"] or report["ready"] or report["model_ready"])
    assert time.monotonic() - started < 8  # three checks of 1 s each
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="not ready after 1s"):
        ZeroShotClient(f"127.0.0.1:{silent_port}", "grpc", timeout_s=30).wait_until_ready(timeout_s=1)
    assert time.monotonic() - started < 5

    async def ready() -> bool:
        async with AsyncZeroShotClient(f"127.0.0.1:{silent_port}", "grpc", timeout_s=1) as client:
            return await client.is_ready()

    started = time.monotonic()
    assert not asyncio.run(ready()) and time.monotonic() - started < 5


def test_a_batch_sent_to_the_wrong_protocols_port_says_which_server_was_expected(http_port):
    with ZeroShotClient(f"127.0.0.1:{http_port}", "grpc", timeout_s=10) as client, pytest.raises(
            ServerUnavailableError, match="is a grpc server listening"):
        client.classify_batch(["one", "two"], ["a", "b"])



def test_the_async_http_client_reports_a_dropped_connection_as_unavailable(closing_port):
    # aiohttp's ServerDisconnectedError (what Triton's gRPC port does to HTTP/1) is no OSError
    async def classify():
        async with AsyncZeroShotClient(f"127.0.0.1:{closing_port}", "http", timeout_s=10) as client:
            await client.classify("one", ["a", "b"])

    with pytest.raises(ServerUnavailableError, match="Server disconnected .*is a http server listening"):
        asyncio.run(classify())


@pytest.mark.parametrize("max_connections", [None, 150])
def test_async_http_client_opens_up_to_max_connections_and_times_out_as_a_deadline(max_connections):
    # a real HTTP listener that accepts and never answers: the connections open at once are the client's pool
    from zsc_client import AsyncZeroShotClient

    async def run() -> tuple[int, list]:
        open_now = peak = 0

        async def hold(reader, writer):
            nonlocal open_now, peak
            open_now += 1
            peak = max(peak, open_now)
            await reader.read()  # until the client gives up and closes
            open_now -= 1
            writer.close()

        server = await asyncio.start_server(hold, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        options = {} if max_connections is None else {"max_connections": max_connections}
        async with AsyncZeroShotClient(f"127.0.0.1:{port}", "http", timeout_s=1.5, **options) as client:
            outcomes = await asyncio.gather(*(client.classify(f"text {i}", ["a", "b"]) for i in range(140)),
                                            return_exceptions=True)
        server.close()
        return peak, outcomes

    peak, outcomes = asyncio.run(run())
    assert peak == (100 if max_connections is None else 140)  # tritonclient's default pool is 100
    assert all(isinstance(outcome, ServerUnavailableError) for outcome in outcomes)
    assert all("deadline exceeded" in outcome.message.lower() for outcome in outcomes)
