"""zsc_server.grpc_front in front of a stand-in upstream (a grpc server on a free loopback port with a generic
raw-bytes handler that records what reaches it), with plain grpc channels as clients. No tritonserver needed."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tests.conftest import settles
from tests.request_properties import model_infer_request
from zsc_server.front_thread import RESTARTING, StopReport
from zsc_server.grpc_front import GrpcFront, GrpcLimits, forwarded_metadata

SERVICE = "/inference.GRPCInferenceService/"
SLOW_S = 0.5  # how long the upstream takes to answer Slow
LIMIT = 64 << 10  # the front's max_message_bytes in these tests


class Upstream(grpc.GenericRpcHandler):
    """Echo (unary, with initial and trailing metadata of its own), ModelInfer (echo after infer_s;
    INVALID_ARGUMENT for b"fail"), Slow, Fail (an error status with details and trailing metadata) and
    Unavailable (UNAVAILABLE answered by the server itself)."""

    def __init__(self, port: int = 0):
        self.received: list[tuple[str, dict, float | None, bytes]] = []
        self.slow_started, self.slow_cancelled = threading.Event(), threading.Event()
        self.infer_s = 0.0  # how long ModelInfer takes
        self.server = grpc.server(futures.ThreadPoolExecutor(16), handlers=(self,),
                                  options=[("grpc.max_receive_message_length", -1), ("grpc.so_reuseport", 0)])
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def service(self, details):
        name = details.method.rsplit("/", 1)[1]
        answer = {"Echo": self.echo, "ModelInfer": self.infer, "Slow": self.slow, "Fail": self.fail,
                  "Unavailable": self.unavailable}[name]
        return grpc.unary_unary_rpc_method_handler(lambda request, context: self._record(name, request, context)
                                                   or answer(request, context))

    def _record(self, name, request, context):
        self.received.append((name, dict(context.invocation_metadata()), context.time_remaining(), request))

    def echo(self, request, context):
        context.send_initial_metadata((("upstream-initial", "1"),))
        context.set_trailing_metadata((("upstream-trailing", "2"),))
        return request

    def infer(self, request, context):
        time.sleep(self.infer_s)
        if b"fail" in request:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "in ensemble 'zero_shot', TEXT: is empty")
        return self.echo(request, context)

    def slow(self, request, context):
        self.slow_started.set()
        deadline = time.monotonic() + SLOW_S
        while time.monotonic() < deadline:
            if not context.is_active():
                self.slow_cancelled.set()
                return b""
            time.sleep(0.01)
        return b"slow"

    def fail(self, request, context):
        context.abort_with_status(_Status(grpc.StatusCode.NOT_FOUND, "no model named 'x'", (("why", "test"),)))

    def unavailable(self, request, context):
        context.abort(grpc.StatusCode.UNAVAILABLE, "model 'zero_shot' is not ready")

    def stop(self):
        self.server.stop(None).wait()


class _Status(grpc.Status):
    def __init__(self, code, details, trailing_metadata):
        self.code, self.details, self.trailing_metadata = code, details, trailing_metadata


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.stop()


@pytest.fixture
def front(upstream):
    front = GrpcFront("127.0.0.1", 0, "127.0.0.1", upstream.port, GrpcLimits(max_message_bytes=LIMIT)).start()
    yield front
    front.stop(drain_timeout_s=1.0)


@pytest.fixture
def channel(front):
    with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        yield channel


INFER = model_infer_request()  # a ModelInfer the front passes on (it reads its model and outputs)
FAILING = model_infer_request(raw=b"fail")  # one the stand-in upstream refuses


def call(channel, name, request=b"hello", **kwargs):
    return channel.unary_unary(SERVICE + name)(request, **kwargs)


def refusal(callable_, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        callable_(*args, **kwargs)
    return raised.value


def test_unary_round_trip_passes_bytes_and_metadata_both_ways(front, channel, upstream):
    payload = bytes(range(256)) * 100
    response, outcome = channel.unary_unary(SERVICE + "Echo").with_call(payload)
    assert response == payload
    assert ("upstream-initial", "1") in outcome.initial_metadata()
    assert ("upstream-trailing", "2") in outcome.trailing_metadata()
    assert upstream.received[0][3] == payload
    assert front.counters == {"forwarded": 1}


def test_the_callers_metadata_is_forwarded_without_grpcs_own(channel, upstream):
    call(channel, "Echo", metadata=(("zsc-admin-key", "secret"), ("trace-bin", b"\x00\xff")))
    metadata = upstream.received[0][1]
    assert metadata["zsc-admin-key"] == "secret" and metadata["trace-bin"] == b"\x00\xff"
    assert forwarded_metadata((("user-agent", "x"), ("grpc-timeout", "1S"), ("key", "v"))) == (("key", "v"),)


def test_an_upstream_error_comes_back_with_its_code_details_and_trailing_metadata(front, channel):
    error = refusal(call, channel, "Fail")
    assert error.code() == grpc.StatusCode.NOT_FOUND and error.details() == "no model named 'x'"
    assert ("why", "test") in error.trailing_metadata()
    assert front.counters == {"forwarded": 1}


def test_an_unavailable_answered_by_the_upstream_itself_is_not_taken_for_a_restart(front, channel):
    error = refusal(call, channel, "Unavailable")
    assert error.code() == grpc.StatusCode.UNAVAILABLE and error.details() == "model 'zero_shot' is not ready"
    assert front.counters == {"forwarded": 1}


def test_the_deadline_is_passed_on(channel, upstream):
    call(channel, "Echo", timeout=5.0)
    call(channel, "Echo")
    assert 4.0 < upstream.received[0][2] <= 5.1  # grpc-timeout rounds up a little
    assert upstream.received[1][2] > 1e9  # no deadline (grpc reports one centuries away)


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip])
def test_a_message_over_the_limit_is_refused_before_the_upstream_sees_it(front, channel, upstream, compression):
    # compressed, 64 MiB of zeros is 64 KB on the wire: under the limit until inflated
    size = (64 << 20) if compression else LIMIT + 1
    error = refusal(call, channel, "Echo", b"\0" * size, compression=compression)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert upstream.received == []
    assert front.counters == {"not_received": 1}
    assert call(channel, "Echo", b"\0" * LIMIT, compression=compression) == b"\0" * LIMIT
    assert upstream.received[0][3] == b"\0" * LIMIT  # what the upstream got is inflated


FRONT_PROCESS = """
import sys
from zsc_server.grpc_front import GrpcFront
front = GrpcFront("127.0.0.1", 0, "127.0.0.1", int(sys.argv[1])).start()
print(front.port, flush=True)
for _ in sys.stdin:  # each line asks for the peak RSS so far, in kB
    print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")), flush=True)
front.stop()
"""


def test_a_compressed_message_is_refused_while_inflating_not_after(upstream):
    """The front in a process of its own, so that its peak RSS is its own: a 128 MiB message that gzip makes
    128 KB costs it almost nothing (measured: 500 MB cost it under 4 MB)."""
    process = subprocess.Popen([sys.executable, "-c", FRONT_PROCESS, str(upstream.port)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        port = int(process.stdout.readline())

        def peak_mib() -> float:
            process.stdin.write("peak\n")
            process.stdin.flush()
            return int(process.stdout.readline()) / 1024

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call(channel, "Echo")
            before = peak_mib()
            error = refusal(call, channel, "Echo", b"\0" * (128 << 20), compression=grpc.Compression.Gzip)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert peak_mib() - before < 16
        assert [entry[3] for entry in upstream.received] == [b"hello"]
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def test_rpcs_beyond_the_concurrency_bound_are_refused(upstream):
    front = GrpcFront("127.0.0.1", 0, "127.0.0.1", upstream.port, GrpcLimits(max_concurrent_rpcs=1)).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            pending = channel.unary_unary(SERVICE + "Slow").future(b"")
            assert upstream.slow_started.wait(5)
            assert refusal(call, channel, "Echo").code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert pending.result(timeout=5) == b"slow"
        assert front.counters == {"forwarded": 1, "not_received": 1}
    finally:
        front.stop()


def test_other_services_are_unimplemented_at_the_front(front, channel, upstream):
    error = refusal(channel.unary_unary("/grpc.reflection.v1.ServerReflection/Info"), b"")
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert upstream.received == [] and front.counters == {"unimplemented": 1}


def test_model_stream_infer_is_unimplemented_at_the_front(front, channel, upstream):
    """For decoupled models: a stream would carry requests past admission control, and idle streams would
    hold the front's RPC slots."""
    stream = channel.stream_stream(SERVICE + "ModelStreamInfer")(iter([b"first", b"second"]), timeout=5)
    assert refusal(list, stream).code() == grpc.StatusCode.UNIMPLEMENTED
    assert upstream.received == [] and front.counters == {"unimplemented": 1}


@pytest.mark.parametrize(("request_bytes", "code", "refused"), [
    (model_infer_request("zero_shot", {}), None, None),
    (model_infer_request("zero_shot", {"LABELS": {}, "SCORES": {}}), None, None),
    (model_infer_request("zero_shot", {"LABELS": {"classification": 1}, "SCORES": {}}), "INVALID_ARGUMENT",
     "classification extension"),
    (model_infer_request("zero_shot", {"LABELS": {}}), "INVALID_ARGUMENT", "name both LABELS and SCORES"),
    (model_infer_request("encoder", {"encoder_output": {}}), "PERMISSION_DENIED", "is not served on this port"),
    (model_infer_request("preprocess", {"labels": {"classification": 2}}), "PERMISSION_DENIED", "not served"),
    (b"\x0b", "INVALID_ARGUMENT", "no ModelInferRequest this server can read"),  # a group: skipped by protobuf
])
def test_model_infer_asking_what_tritonserver_must_not_read_is_refused_before_it(front, channel, upstream,
                                                                                   request_bytes, code, refused):
    """The ensemble's steps are not served on the public ports; the classification extension on a BYTES output
    kills tritonserver 2.51; an answer cut to some outputs would be the response cache's answer for everyone
    (zsc_server.inference_request)."""
    if refused is None:
        assert call(channel, "ModelInfer", request_bytes) == request_bytes
        assert front.counters == {"forwarded": 1}
        return
    error = refusal(call, channel, "ModelInfer", request_bytes)
    assert error.code() == getattr(grpc.StatusCode, code) and refused in error.details()
    assert upstream.received == []
    assert front.counters == {"not_served" if code == "PERMISSION_DENIED" else "outputs": 1}


def test_an_unreachable_upstream_is_unavailable_with_a_retry_hint(upstream):
    upstream.stop()
    front = GrpcFront("127.0.0.1", 0, "127.0.0.1", upstream.port).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
            for name in ("Echo", "Echo"):
                error = refusal(call, channel, name, timeout=10)
                assert error.code() == grpc.StatusCode.UNAVAILABLE and error.details() == RESTARTING
        assert front.counters == {"upstream_down": 2}
    finally:
        front.stop()


def test_an_upstream_back_on_the_same_port_is_used_again_within_seconds(front, channel, upstream):
    upstream.stop()
    assert refusal(call, channel, "Echo").details() == RESTARTING
    time.sleep(1.5)  # long enough for gRPC's default reconnect backoff to have grown past a few seconds
    again = Upstream(upstream.port)
    try:
        answered_after, started = None, time.monotonic()
        while answered_after is None and time.monotonic() - started < 3:
            with contextlib.suppress(grpc.RpcError):
                call(channel, "Echo", b"back", timeout=3)
                answered_after = time.monotonic() - started
            time.sleep(0.05)
        assert answered_after is not None and [entry[3] for entry in again.received] == [b"back"]
    finally:
        again.stop()


def test_the_upstream_port_can_change_while_running(front, channel, upstream):
    call(channel, "Echo", b"to the first")
    second = Upstream()
    try:
        front.upstream_port = second.port
        call(channel, "Echo", b"to the second")
        assert [entry[3] for entry in upstream.received] == [b"to the first"]
        assert [entry[3] for entry in second.received] == [b"to the second"]
    finally:
        second.stop()


def test_a_caller_cancelling_cancels_the_upstream_call(channel, upstream):
    pending = channel.unary_unary(SERVICE + "Slow").future(b"")
    assert upstream.slow_started.wait(5)
    pending.cancel()
    assert upstream.slow_cancelled.wait(5)


def test_stop_lets_an_rpc_in_flight_finish_and_refuses_new_ones(upstream):
    front = GrpcFront("127.0.0.1", 0, "127.0.0.1", upstream.port).start()
    with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        call(channel, "Echo")  # connected before the stop
        pending = channel.unary_unary(SERVICE + "Slow").future(b"")
        assert upstream.slow_started.wait(5)
        stopping = futures.ThreadPoolExecutor(1).submit(front.stop, 5.0)
        time.sleep(0.1)
        error = refusal(call, channel, "Echo", timeout=5)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert pending.result(timeout=5) == b"slow"
        assert stopping.result(timeout=5) == StopReport(in_flight=1, cut=0)
    assert len(upstream.received) == 2


def test_stop_cuts_what_outlasts_the_drain_bound(upstream):
    front = GrpcFront("127.0.0.1", 0, "127.0.0.1", upstream.port).start()
    with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        pending = channel.unary_unary(SERVICE + "Slow").future(b"")
        assert upstream.slow_started.wait(5)
        assert front.stop(drain_timeout_s=0.05) == StopReport(in_flight=1, cut=1)
        assert refusal(pending.result, timeout=5).code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert upstream.slow_cancelled.wait(5)


def test_a_busy_port_is_an_oserror_naming_the_address(upstream):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            GrpcFront("127.0.0.1", port, "127.0.0.1", upstream.port).start()
    first = GrpcFront("127.0.0.1", 0, "127.0.0.1", upstream.port).start()
    try:
        with pytest.raises(OSError, match=f"127.0.0.1:{first.port}"):
            GrpcFront("127.0.0.1", first.port, "127.0.0.1", upstream.port).start()
    finally:
        first.stop()


def test_inference_is_refused_at_the_front_while_admission_control_says_busy(front, channel, upstream, admission):
    front_gate, server_side = admission
    front.admission = front_gate
    server_side.admit(60)  # 120 ms booked, over the 100 ms budget
    error = refusal(call, channel, "ModelInfer", INFER)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details().startswith("busy: requests would wait about 120 ms")
    assert call(channel, "Echo") == b"hello"  # everything else (health, metadata) goes on as before
    assert [name for name, *_ in upstream.received] == ["Echo"]  # tritonserver never saw the refused call
    server_side.executed(60, 0.12)
    call(channel, "ModelInfer", INFER)
    assert [name for name, *_ in upstream.received] == ["Echo", "ModelInfer"]
    assert front.counters["busy"] == 1


def test_requests_forwarded_and_not_answered_count_against_the_budget(front, channel, upstream, admission):
    """Requests queued in front of the preprocess are not in the ledger yet: the front bounds those it forwarded
    and has not seen answered (here by its floor: nothing answered recently)."""
    front_gate, _ = admission
    front_gate.min_in_flight = 3
    front.admission = front_gate
    upstream.infer_s = 1.0
    with futures.ThreadPoolExecutor(3) as pool:
        held = [pool.submit(call, channel, "ModelInfer", INFER) for _ in range(3)]
        assert settles(lambda: front_gate.in_flight == 3)
        error = refusal(call, channel, "ModelInfer", INFER)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details().startswith("busy: requests would wait about 133 ms")  # 4 x 100 ms / 3
        assert [answer.result() for answer in held] == [INFER] * 3
    assert settles(lambda: front_gate.in_flight == 0)
    assert front_gate.max_in_flight() == 3  # 3 correct answers in the last second: 0.3 in the budget
    upstream.infer_s = 0.0
    assert call(channel, "ModelInfer", INFER) == INFER  # answered ones no longer count
    assert refusal(call, channel, "ModelInfer", FAILING).code() == grpc.StatusCode.INVALID_ARGUMENT
    assert settles(lambda: front_gate.in_flight == 0)
    assert len(front_gate._answered) == 4  # the correct answers, not the error
    assert front.counters["busy"] == 1
