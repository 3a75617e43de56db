"""zsc_server.http_front in front of a stand-in upstream (http.server on a free loopback port that records
what reaches it and answers JSON), with raw sockets and http.client as clients. No tritonserver needed."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import http.server
import json
import socket
import threading
import time

import pytest

from tests.conftest import settles
from zsc_server.front_thread import RESTARTING, StopReport
from zsc_server.http_front import FrontLimits, HttpFront

SLOW_S = 0.5  # how long the upstream takes to answer /slow
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "te", "trailer", "upgrade", "proxy-x"}
INFER = "/v2/models/zero_shot/infer"
KSERVE = b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],"data":["hello"]}]}'
DEEP = b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],"data":' + b"[" * 50_000 + b"]" * 50_000 + b"}]}"


class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append((self.command, self.path, [(k.lower(), v) for k, v in self.headers.items()], body))
        if self.path == "/slow":
            self.server.slow_started.set()
            time.sleep(SLOW_S)
        answer = json.dumps({"received": len(body), "path": self.path}).encode()
        self.send_response(400 if self.path.endswith("?refused") else 200)
        self.send_header("Content-Type", "application/json")
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            pieces = answer[:9], answer[9:]
            self.wfile.write(b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n")
            return
        if self.path == "/gzip":
            answer = gzip.compress(answer)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST

    def log_message(self, *args):
        pass


class Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Recorder)
        self.received: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        self.slow_started = threading.Event()
        self.port = self.server_address[1]


@contextlib.contextmanager
def serving():
    server = Upstream()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def upstream():
    with serving() as server:
        yield server


@contextlib.contextmanager
def running(upstream_port: int, limits: FrontLimits = FrontLimits()):  # noqa: B008
    front = HttpFront("127.0.0.1", 0, "127.0.0.1", upstream_port, limits).start()
    try:
        yield front
    finally:
        front.stop(1.0)


@pytest.fixture
def front(upstream):
    with running(upstream.port) as started:
        yield started


def connect(front: HttpFront) -> socket.socket:
    return socket.create_connection(("127.0.0.1", front.port), timeout=5)


def response_of(sock: socket.socket, method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    """One response read from `sock` (status, lower-case headers, body)."""
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: front", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def send_until_cut(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # a refusal may close the connection before it all went out
        sock.sendall(data)


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def test_keep_alive_round_trips_forward_the_body_without_hop_by_hop_headers(front, upstream):
    client = http.client.HTTPConnection("127.0.0.1", front.port, timeout=5)
    headers = {"Content-Type": "application/json", "Connection": "keep-alive, X-Hop", "Keep-Alive": "timeout=5",
               "TE": "trailers", "Proxy-X": "1", "X-Hop": "named by Connection", "X-Kept": "yes"}
    for _ in range(3):
        client.request("POST", "/v2/models/zero_shot/infer", body=KSERVE, headers=headers)
        response = client.getresponse()
        assert response.status == 200
        assert json.loads(response.read()) == {"received": len(KSERVE), "path": "/v2/models/zero_shot/infer"}
        assert response.getheader("Connection") is None
    sock = client.sock
    client.request("GET", "/v2/health/ready")
    assert client.getresponse().read() and client.sock is sock  # one connection all along
    client.close()
    for method, _, received_headers, body in upstream.received[:3]:
        names = {name for name, _ in received_headers}
        assert method == "POST" and body == KSERVE
        assert ("content-length", str(len(KSERVE))) in received_headers and ("x-kept", "yes") in received_headers
        assert not names & (HOP_BY_HOP | {"x-hop"})
    assert len(upstream.received) == 4 and front.counters == {"forwarded": 4}


def test_pipelined_requests_are_answered_in_order(front, upstream):
    with connect(front) as sock:
        sock.sendall(post("/first", KSERVE) + post("/second", b"{}") + b"GET /third HTTP/1.1\r\nHost: f\r\n\r\n")
        data = b""
        while data.count(b'"path"') < 3:
            data += sock.recv(65536)
    assert data.index(b"/first") < data.index(b"/second") < data.index(b"/third")
    assert [received[1] for received in upstream.received] == ["/first", "/second", "/third"]


def test_a_chunked_upload_is_forwarded_as_one_body_with_content_length(front, upstream):
    with connect(front) as sock:
        sock.sendall(b"POST /v2/models/zero_shot/infer HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"1a;ext=1\r\n" + KSERVE[:26] + b"\r\n" + b"%x\r\n" % (len(KSERVE) - 26) + KSERVE[26:]
                     + b"\r\n0\r\nX-Trailer: dropped\r\n\r\n")
        assert response_of(sock)[0] == 200
    (_, _, headers, body), = upstream.received
    assert body == KSERVE and ("content-length", str(len(KSERVE))) in headers
    assert not {name for name, _ in headers} & {"transfer-encoding", "x-trailer"}


@pytest.mark.parametrize("max_body_bytes, status", [(FrontLimits().max_body_bytes, 200), (100_000, 413)])
def test_600000_one_byte_chunks_are_bounded_and_quick(upstream, max_body_bytes, status):
    chunks = b"POST /x HTTP/1.1\r\nHost: f\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 600_000
    with running(upstream.port, FrontLimits(max_body_bytes=max_body_bytes)) as front, connect(front) as sock:
        started = time.perf_counter()
        sender = threading.Thread(target=send_until_cut, args=(sock, chunks + b"0\r\n\r\n"))
        sender.start()
        got, headers, body = response_of(sock)
        sender.join()
        elapsed_s = time.perf_counter() - started
    assert got == status and elapsed_s < 5.0
    assert [received[3] for received in upstream.received] == ([b"x" * 600_000] if status == 200 else [])
    assert status == 200 or (headers["connection"] == "close" and "max_body_bytes" in error_of(body))


def test_a_content_length_over_the_limit_is_refused_before_the_body(front, upstream):
    with connect(front) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: f\r\nContent-Length: 5242880\r\n\r\n")  # and no body
        status, headers, body = response_of(sock)
    assert (status, headers["connection"], headers["content-type"]) == (413, "close", "application/json")
    assert error_of(body) == "request body of 5242880 bytes is over the limit of 1048576 (max_body_bytes)"
    assert upstream.received == [] and front.counters == {"body_too_large": 1}


def test_deep_json_is_refused_and_the_connection_serves_on(front, upstream):
    with connect(front) as sock:
        sock.sendall(post("/v2/models/zero_shot/infer", DEEP))
        status, headers, body = response_of(sock)
        assert status == 400 and "connection" not in headers and "max_json_depth" in error_of(body)
        sock.sendall(post("/v2/models/zero_shot/infer", KSERVE))
        assert response_of(sock)[0] == 200
    assert [received[3] for received in upstream.received] == [KSERVE]
    assert front.counters == {"json_too_deep": 1, "forwarded": 1}


def test_only_the_json_part_of_a_binary_tensor_request_is_checked(front, upstream):
    binary = bytes(range(256)) * 4 + b"[" * 1000  # tensor bytes, brackets included
    with connect(front) as sock:
        sock.sendall(post(INFER, KSERVE + binary, f"Inference-Header-Content-Length: {len(KSERVE)}"))
        assert response_of(sock)[0] == 200
        sock.sendall(post(INFER, DEEP + binary, f"Inference-Header-Content-Length: {len(DEEP)}"))
        assert response_of(sock)[0] == 400
        sock.sendall(post("/v2/models/zero_shot/infer", KSERVE, "Inference-Header-Content-Length: 99999"))
        status, _, body = response_of(sock)
        assert status == 400 and "Inference-Header-Content-Length" in error_of(body)
    assert [received[3] for received in upstream.received] == [KSERVE + binary]


@pytest.mark.parametrize(("outputs", "refused"), [
    ([{"name": "LABELS"}, {"name": "SCORES"}], None),
    ([{"name": "SCORES"}, {"name": "LABELS", "parameters": {"binary_data": True}}], None),
    ([{"name": "LABELS", "parameters": {"classification": 2}}, {"name": "SCORES"}], "classification extension"),
    ([{"name": "LABELS"}], "name both LABELS and SCORES"),
])
def test_outputs_that_tritonserver_must_not_read_are_refused_before_it(front, upstream, outputs, refused):
    """The classification extension on a BYTES output kills tritonserver 2.51 (SIGFPE); an answer cut to some
    outputs would be the response cache's answer for everyone (zsc_server.inference_request)."""
    body = json.dumps({"inputs": json.loads(KSERVE)["inputs"], "outputs": outputs}).encode()
    with connect(front) as sock:
        sock.sendall(post("/v2/models/zero_shot/infer", body))
        status, _, answer = response_of(sock)
        if refused is None:
            assert status == 200 and [received[3] for received in upstream.received] == [body]
            return
        assert status == 400 and refused in error_of(answer) and error_of(answer).startswith("outputs: ")
        sock.sendall(post("/v2/models/zero_shot/infer", KSERVE))  # the connection serves on
        assert response_of(sock)[0] == 200
    assert [received[3] for received in upstream.received] == [KSERVE]


def test_expect_100_continue_as_curl_sends_it(front, upstream):
    body = b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],"data":["' + b"x" * 2000 + b'"]}]}'
    with connect(front) as sock:
        sock.sendall(post("/x", b"", "Expect: 100-continue").replace(b"Length: 0", b"Length: %d" % len(body)))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert response_of(sock)[0] == 200
    with connect(front) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: f\r\nContent-Length: 2000000\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 413 ")
    (_, _, headers, received), = upstream.received
    assert received == body and "expect" not in {name for name, _ in headers}


def test_an_unreachable_upstream_is_a_503_and_the_upstream_port_can_change(upstream):
    with running(0) as front, connect(front) as sock:  # as the launcher starts it, before tritonserver is ready
        sock.sendall(post("/x", KSERVE))
        status, headers, body = response_of(sock)
        assert (status, headers["retry-after"], error_of(body)) == (503, "1", RESTARTING)
        front.upstream_port = upstream.port
        sock.sendall(post("/x", KSERVE))  # the client connection serves on
        assert response_of(sock)[0] == 200
        with serving() as second:  # tritonserver restarted on other ports; the first one's connection is stale
            front.upstream_port = second.port
            sock.sendall(post("/x", KSERVE))
            assert response_of(sock)[0] == 200 and len(second.received) == len(upstream.received) == 1
    assert front.counters == {"upstream_down": 1, "forwarded": 2}


def read_request(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return body


@contextlib.contextmanager
def scripted_upstream(*scripts):
    """A raw upstream that runs scripts[i](socket) on its i-th connection."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        for script in scripts:
            sock, _ = listener.accept()
            with sock:
                script(sock)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_a_stale_pooled_connection_is_retried_once_on_a_fresh_one():
    bodies = []

    def answers_once_then_closes(sock):
        bodies.append(read_request(sock))
        sock.sendall(OK)
        bodies.append(read_request(sock))  # and closes without a byte of answer

    def answers(sock):
        bodies.append(read_request(sock))
        sock.sendall(OK)

    with scripted_upstream(answers_once_then_closes, answers) as port, running(port) as front, connect(front) as sock:
        for body in (b'{"n": 1}', b'{"n": 2}'):
            sock.sendall(post("/x", body))
            assert response_of(sock)[:3:2] == (200, b"{}")
    assert bodies == [b'{"n": 1}', b'{"n": 2}', b'{"n": 2}']


def test_an_upstream_failing_mid_way_is_a_502():
    def half_answers(sock):
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-")

    with scripted_upstream(half_answers) as port, running(port) as front, connect(front) as sock:
        sock.sendall(post("/x", KSERVE))
        assert response_of(sock)[0] == 502
    assert front.counters == {"upstream_failed": 1}


def test_responses_pass_through_chunked_and_compressed(front):
    client = http.client.HTTPConnection("127.0.0.1", front.port, timeout=5)
    client.request("POST", "/chunked", body=KSERVE)
    response = client.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert json.loads(response.read()) == {"received": len(KSERVE), "path": "/chunked"}
    client.request("POST", "/gzip", body=KSERVE)
    response = client.getresponse()
    assert response.getheader("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(response.read()))["path"] == "/gzip"
    client.close()
    with connect(front) as sock:  # HTTP/1.0: the data, then the close
        sock.sendall(b"POST /chunked HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}")
        data = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and json.loads(body)["path"] == "/chunked"


@pytest.mark.parametrize(
    "request_bytes, status",
    [
        (b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", 400),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),
        (b"POST /x HTTP/1.1\r\nX: 1\nContent-Length: 5\r\n\r\n", 400),
        (b"POST /x HTTP/2.0\r\n\r\n", 505),
        (b"POST /x HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}", 415),  # inflated unbounded
        (b"POST /x HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        # tritonserver 2.51 answered a header of 8 KiB with a 502, as if it had failed
        (b"POST /x HTTP/1.1\r\nCookie: " + b"a" * 8192 + b"\r\nContent-Length: 2\r\n\r\n{}", 431),
        (b"GET /v2/health/ready?" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"POST /x HTTP/1.1\r\n" + b"X: 1\r\n" * 101 + b"\r\n", 431),
        (b"POST /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: the-moon\r\n\r\n{}", 417),
        # a header named by Connection is dropped on the way: tritonserver 2.51, told no
        # Inference-Header-Content-Length, parsed the whole body as JSON past the nesting check (SIGSEGV)
        (b"POST /v2/models/zero_shot/infer HTTP/1.1\r\nConnection: Inference-Header-Content-Length\r\n"
         b"Inference-Header-Content-Length: 0\r\nContent-Length: 2\r\n\r\n{}", 400),
        (b"POST /x HTTP/1.1\r\nConnection: keep-alive, Content-Length\r\nContent-Length: 2\r\n\r\n{}", 400),
        # Triton's routes for decoupled and LLM models: not served, and they would skip admission control
        (b"POST /v2/models/zero_shot/generate HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 404),
        (b"POST /v2/models/zero_shot/versions/1/generate_stream HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 404),
    ],
)
def test_requests_that_cannot_be_framed_safely_are_refused_and_closed(front, upstream, request_bytes, status):
    with connect(front) as sock:
        sock.sendall(request_bytes)
        got, headers, body = response_of(sock)
    assert (got, headers["connection"]) == (status, "close") and error_of(body)
    assert upstream.received == []


def test_stop_finishes_a_request_in_flight_and_closes_idle_connections_at_once(upstream):
    front = HttpFront("127.0.0.1", 0, "127.0.0.1", upstream.port).start()
    with connect(front) as idle, connect(front) as busy:
        idle.sendall(post("/fast", KSERVE))
        assert response_of(idle)[0] == 200
        busy.sendall(post("/slow", KSERVE))
        assert upstream.slow_started.wait(5)
        reports = []
        stopper = threading.Thread(target=lambda: reports.append(front.stop(5.0)))
        started = time.perf_counter()
        stopper.start()
        assert idle.recv(1) == b"" and time.perf_counter() - started < SLOW_S / 2
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", front.port), timeout=1)
        status, headers, _ = response_of(busy)
        stopper.join(5)
    assert (status, headers["connection"]) == (200, "close")
    assert reports == [StopReport(in_flight=1, cut=0)] == [front.stop_report]


def test_stop_cuts_what_outlasts_the_drain_bound(upstream):
    front = HttpFront("127.0.0.1", 0, "127.0.0.1", upstream.port).start()
    with connect(front) as busy:
        busy.sendall(post("/slow", KSERVE))
        assert upstream.slow_started.wait(5)
        assert front.stop(0.05) == StopReport(in_flight=1, cut=1)
        assert busy.recv(100) == b""


def test_a_busy_port_is_an_oserror_naming_the_address(upstream):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            HttpFront("127.0.0.1", port, "127.0.0.1", upstream.port).start()


def test_connections_beyond_the_limit_are_answered_503(upstream):
    with running(upstream.port, FrontLimits(max_connections=1)) as front, connect(front) as first:
        first.sendall(post("/x", KSERVE))
        assert response_of(first)[0] == 200
        with connect(front) as second:
            status, headers, body = response_of(second)
        assert status == 503 and "max_connections" in error_of(body)
        first.sendall(post("/x", KSERVE))
        assert response_of(first)[0] == 200
    assert front.counters == {"forwarded": 2, "too_many_connections": 1}


@pytest.mark.parametrize("sent, reason", [(b"", "header_timeout"), (post("/x", b"{}")[:-1], "body_timeout")])
def test_slow_or_idle_clients_are_cut(upstream, sent, reason):
    limits = FrontLimits(header_timeout_s=0.2, body_timeout_s=0.2)
    with running(upstream.port, limits) as front, connect(front) as sock:
        sock.sendall(sent)
        started = time.perf_counter()
        assert sock.recv(100) == b"" and time.perf_counter() - started < 2
    assert front.counters == {reason: 1}


def test_inference_is_refused_with_retry_after_while_admission_control_says_busy(front, upstream, admission):
    front_gate, server_side = admission
    front.admission = front_gate
    server_side.admit(60)  # 120 ms booked, over the 100 ms budget
    client = http.client.HTTPConnection("127.0.0.1", front.port, timeout=5)
    client.request("POST", "/v2/models/zero_shot/infer", body=KSERVE, headers={"Content-Type": "application/json"})
    response = client.getresponse()
    assert response.status == 503 and response.getheader("Retry-After") == "1"
    assert error_of(response.read()).startswith("busy: requests would wait about 120 ms")
    client.request("GET", "/v2/health/ready")  # the same connection serves on, and health is not inference
    assert client.getresponse().status == 200
    assert [(method, path) for method, path, *_ in upstream.received] == [("GET", "/v2/health/ready")]
    assert front.counters["busy"] == 1
    server_side.executed(60, 0.12)
    client = http.client.HTTPConnection("127.0.0.1", front.port, timeout=5)
    for query, status in (("", 200), ("?refused", 400)):  # the stand-in refuses the second
        client.request("POST", f"/v2/models/zero_shot/infer{query}", body=KSERVE,
                       headers={"Content-Type": "application/json"})
        response = client.getresponse()
        assert response.status == status and response.read()
    assert settles(lambda: front_gate.in_flight == 0)
    assert len(front_gate._answered) == 1  # a correct answer counts, an error not
