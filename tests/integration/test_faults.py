"""Faults under load (issue #7): the encoder's Python-backend stub killed mid-flight, and the whole server
restarted on the same ports. Each test starts its own tritonserver on the structbert fixture's repository:
these tests break servers, and the session's shared one must stay whole.

Every answer is checked against the request it answers; every request must end (an answer or an error)
well within its client timeout.
"""

from __future__ import annotations

import dataclasses
import itertools
import signal
import threading
import time

import psutil
import pytest

from loadtest.workload import ClassifyRequest, answer_problem
from tests.conftest import ARTIFACTS
from zsc_client import ServerUnavailableError, ZeroShotClient, ZeroShotClientError
from zsc_server.serve import TritonServer, free_ports

TIMEOUT_S = 20.0
# Triton waits this long on SIGTERM for open HTTP connections (keep-alive clients hold theirs) and for models
# to unload (never, for a dead stub) before it exits anyway; its default, 30 s, equals TritonServer.stop's
# patience, which then SIGKILLs it.
EXIT_TIMEOUT_S = 5
# What a client sees while tritonserver stops and starts: all mean "try again", whatever class zsc_client gives
TRANSIENT = ("Server is stopping", "has no available versions", "connection closed", "Connection refused",
             "failed to connect", "Socket closed", "Connection reset")
LABEL_SETS = (("咨询", "投诉", "建议"), ("物流", "退款", "表扬", "维修"), ("bug report", "praise"))


@dataclasses.dataclass
class Outcome:
    request: ClassifyRequest
    client: int  # which of the Load's clients sent it
    started: float
    ended: float
    problem: str | None = None  # the answer does not fit the request
    error: ZeroShotClientError | None = None


class Load:
    """Worker threads, each with its own client made before any fault, sending requests back to back.
    Texts are numbered so that no two requests are alike and the response cache never answers.
    (An HTTP client stays on the thread that first used it: tritonclient.http's gevent hub is per thread.)"""

    def __init__(self, clients: list[ZeroShotClient], pause_after_error_s: float = 0.05) -> None:
        self.clients, self.pause_after_error_s = clients, pause_after_error_s
        self.outcomes: list[Outcome] = []
        self._numbers = itertools.count()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(len(clients))]

    def _work(self, index: int) -> None:
        client = self.clients[index]
        while not self._stop.is_set():
            n = next(self._numbers)
            request = ClassifyRequest(f"第{n}单：我的快递三天了还没到，请帮我查一下", LABEL_SETS[n % 3], n % 4 == 0)
            started = time.monotonic()
            outcome = Outcome(request, index, started, started)
            try:
                result = client.classify(request.text, list(request.labels), multi_label=request.multi_label)
                outcome.problem = answer_problem(request, result.labels, result.scores) or (
                    None if result.text == request.text else f"text {result.text!r}")
            except ZeroShotClientError as exc:
                outcome.error = exc
            outcome.ended = time.monotonic()
            with self._lock:
                self.outcomes.append(outcome)
            if outcome.error is not None:
                time.sleep(self.pause_after_error_s)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT_S + 10)
        assert not any(thread.is_alive() for thread in self._threads), "a request never ended"

    def answered_after(self, moment: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.error is None and o.started > moment]

    def wait_for_answers(self, count: int, after: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.answered_after(after)) < count and time.monotonic() < deadline:
            time.sleep(0.1)


def own_server(structbert, name: str, ports: list[int] | None = None) -> TritonServer:
    http, grpc, metrics = ports or free_ports(3)
    return TritonServer(structbert.repository, http, grpc, metrics, log_path=ARTIFACTS / f"triton-faults-{name}.log",
                        extra_args=(f"--exit-timeout-secs={EXIT_TIMEOUT_S}",))


def encoder_stub(server: TritonServer) -> psutil.Process:
    """The encoder's triton_python_backend_stub: a child of tritonserver running encoder/1/model.py."""
    for child in psutil.Process(server.process.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and any(
                    arg.endswith("/encoder/1/model.py") for arg in child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError("no encoder stub process under tritonserver")


def assert_every_answer_fits(outcomes: list[Outcome]) -> None:
    wrong = [(o.request, o.problem) for o in outcomes if o.problem]
    assert not wrong, f"{len(wrong)} answers do not fit their requests: {wrong[:3]}"
    slow = [o for o in outcomes if o.ended - o.started > TIMEOUT_S - 5]
    assert not slow, f"{len(slow)} requests took nearly the client timeout: {slow[0]}"


@pytest.fixture(scope="module")
def stub_killed(structbert):
    """A server whose encoder stub was SIGKILLed under load from 4 threads; yields what was seen."""
    ARTIFACTS.mkdir(exist_ok=True)
    server = own_server(structbert, "stub-kill").__enter__()
    clients = [ZeroShotClient(url, protocol, timeout_s=TIMEOUT_S) for protocol, url in
               (("grpc", server.grpc_url), ("http", server.http_url)) for _ in range(2)]
    try:
        with Load(clients) as load:
            load.wait_for_answers(8, 0, timeout_s=30)
            stub = encoder_stub(server)
            killed_at = time.monotonic()
            stub.send_signal(signal.SIGKILL)
            time.sleep(4)
        yield {"server": server, "load": load, "killed_at": killed_at, "clients": clients}
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_requests_in_flight_when_the_encoder_stub_dies_fail_cleanly(stub_killed):
    load, killed_at = stub_killed["load"], stub_killed["killed_at"]
    assert load.answered_after(0), "no answer before the kill"
    assert_every_answer_fits(load.outcomes)
    after = [o for o in load.outcomes if o.ended > killed_at]
    assert [o for o in after if o.started < killed_at], "no request was in flight at the kill"
    failed = [o for o in after if o.error is not None]
    assert failed, "killing the encoder stub failed no request"
    # Triton 2.51 answers each request for a dead stub after its 1 s health-lock wait
    for outcome in failed:
        assert "Stub process" in outcome.error.message and "is not healthy" in outcome.error.message, \
            outcome.error
    assert stub_killed["server"].process.poll() is None, "tritonserver itself died"
    print(f"{len(load.outcomes) - len(after)} answered before the kill; after it {len(after) - len(failed)} "
          f"answered, {len(failed)} failed in at most {max(o.ended - o.started for o in failed):.1f} s each")


@pytest.mark.xfail(strict=True, reason="Triton 2.51's Python backend (r24.10) never restarts a dead stub and keeps "
                   "reporting the server and the encoder ready: every later request fails with \"Stub process "
                   "'encoder_0_0' is not healthy\" until tritonserver is restarted")
def test_service_recovers_or_reports_unready_after_the_encoder_stub_dies(stub_killed):
    server, client = stub_killed["server"], stub_killed["clients"][0]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not server.is_ready():
            return  # an orchestrator's readiness probe would take it out of service
        try:
            result = client.classify("物流太慢了，东西到现在还没到", ["物流", "退款"])
        except ZeroShotClientError:
            time.sleep(0.5)
            continue
        assert sorted(result.labels) == sorted(["物流", "退款"])
        return
    pytest.fail("10 s after the encoder stub died the server still reports ready and answers every request "
                "with an error")


def test_the_inference_probe_sees_the_dead_stub_that_health_ready_does_not(stub_killed, structbert):
    """The compose health check and the Kubernetes liveness probe (zsc_server.probe) fail on the server
    whose encoder stub died, so an orchestrator restarts it; on a healthy server they pass."""
    from zsc_server.probe import main as probe_main

    assert probe_main(["--url", f"http://{structbert.server.http_url}"]) == 0
    assert stub_killed["server"].is_ready()  # what Triton's own health endpoint still says
    assert probe_main(["--url", f"http://{stub_killed['server'].http_url}"]) == 1


def test_clients_made_before_a_server_restart_work_after_it(structbert):
    """SIGTERM under load, then a new tritonserver on the same ports: the same client objects answer again."""
    ARTIFACTS.mkdir(exist_ok=True)
    ports = free_ports(3)
    server = own_server(structbert, "restart", ports).__enter__()
    clients = [ZeroShotClient(url, protocol, timeout_s=TIMEOUT_S) for protocol, url in
               (("grpc", server.grpc_url), ("http", server.http_url)) for _ in range(2)]
    try:
        with Load(clients) as load:
            load.wait_for_answers(8, 0, timeout_s=30)
            stopping = time.monotonic()
            code = server.stop(timeout_s=EXIT_TIMEOUT_S + 15)
            # How the old server ends is not what this test is about, and tritonserver 2.51 under load does
            # not end one way: 0; 1 (exit timeout used up by HTTP keep-alive connections); -11 (a crash in
            # its own teardown) and -9 (still running after the exit timeout + 15 s, so stop() killed it),
            # each seen in clean-clone CI runs here. What the restart needs: the old process is gone.
            assert server.process.poll() is not None, f"the first tritonserver is still running ({code})"
            down = time.monotonic()
            server = own_server(structbert, "restart-2", ports).__enter__()
            back = time.monotonic()
            # every client (two per protocol) answers again; gRPC reconnects with its own back-off
            deadline = back + 30
            while time.monotonic() < deadline and len({o.client for o in load.answered_after(back)}) < len(clients):
                time.sleep(0.2)
            load.wait_for_answers(20, back, timeout_s=max(0.0, deadline - time.monotonic()))
        answered = load.answered_after(back)
        assert_every_answer_fits(load.outcomes)
        assert {o.client for o in answered} == set(range(len(clients))), "a client never answered again"
        assert len(answered) >= 20, f"only {len(answered)} answers within 30 s of the restart"
        during = [o for o in load.outcomes if o.error is not None]
        assert during, "the restart failed no request: was the server really down?"
        odd = [o for o in during if not isinstance(o.error, ServerUnavailableError)
               and not any(text in o.error.message for text in TRANSIENT)]
        assert not odd, f"errors that do not say 'unavailable' while restarting: {[str(o.error) for o in odd[:3]]}"
        assert all(stopping <= o.ended for o in during), "errors before the restart"
        print(f"stop took {down - stopping:.1f} s (exit code {code}), start {back - down:.1f} s; "
              f"{len(during)} requests refused meanwhile, {len(answered)} answered after")
    finally:
        for client in clients:
            client.close()
        server.stop()


def test_make_serve_stops_a_server_whose_stub_died(structbert):
    """`make serve`'s launcher probes with real classifications and exits 3 when they keep failing,
    for a supervisor to restart it (Triton itself keeps reporting ready)."""
    import subprocess

    from tests.conftest import serve_launcher
    from zsc_server.serve import UNHEALTHY_EXIT

    with serve_launcher(structbert.repository, "--probe-interval-s", "1", stderr=subprocess.PIPE) as (launcher, _, _):
        time.sleep(3)  # a few healthy probes first
        assert launcher.poll() is None
        [stub] = [p for p in psutil.Process(launcher.pid).children(recursive=True)
                  if "/encoder/1/model.py" in " ".join(p.cmdline())]
        stub.send_signal(signal.SIGKILL)
        assert launcher.wait(timeout=60) == UNHEALTHY_EXIT
        assert "stopped answering" in launcher.stderr.read()
        assert "Stub process" in launcher.stdout.read()
