"""Faults under load: the encoder's Python-backend stub killed mid-flight (and brought back by
reloading the encoder), and the whole server restarted on the same ports. Each test starts its own
tritonserver on the structbert fixture's repository: these tests break servers, and the session's shared
one must stay whole.

Every answer is checked against the request it answers; every request must end (an answer or an error)
well within its client timeout.
"""

from __future__ import annotations

import signal
import subprocess
import time

import psutil
import pytest

from tests.conftest import ARTIFACTS, Printed
from tests.faults import TIMEOUT_S, Load, assert_every_answer_fits, stub
from zsc_client import ServerUnavailableError, ZeroShotClient, ZeroShotClientError
from zsc_server.probe import Health
from zsc_server.triton_process import TritonServer, free_ports

# Triton waits this long on SIGTERM for open HTTP connections (keep-alive clients hold theirs) and for models
# to unload (never, for a dead stub) before it exits anyway; its default, 30 s, equals TritonServer.stop's
# patience, which then SIGKILLs it.
EXIT_TIMEOUT_S = 5
# What a client sees while tritonserver stops and starts: all mean "try again", whatever class zsc_client gives
TRANSIENT = ("Server is stopping", "has no available versions", "connection closed", "Connection refused",
             "failed to connect", "Socket closed", "Connection reset")


def own_server(structbert, name: str, ports: list[int] | None = None) -> TritonServer:
    http, grpc, metrics = ports or free_ports(3)
    return TritonServer(structbert.repository, http, grpc, metrics, log_path=ARTIFACTS / f"triton-faults-{name}.log",
                        extra_args=(f"--exit-timeout-secs={EXIT_TIMEOUT_S}",))


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
            encoder = stub(server.process.pid, "encoder_0_0")
            killed_at = time.monotonic()
            encoder.send_signal(signal.SIGKILL)
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
    # Triton 2.51 answers each request for a dead stub after its 1 s health-lock wait; the requests queued
    # behind it meanwhile may run out of the encoder queue's wait budget first: refused, also cleanly
    for outcome in failed:
        message = outcome.error.message
        assert ("Stub process" in message and "is not healthy" in message) \
            or "Request timeout expired" in message, outcome.error
    assert stub_killed["server"].process.poll() is None, "tritonserver itself died"
    print(f"{len(load.outcomes) - len(after)} answered before the kill; after it {len(after) - len(failed)} "
          f"answered, {len(failed)} failed in at most {max(o.ended - o.started for o in failed):.1f} s each")


def test_the_inference_probe_sees_the_dead_stub_that_health_ready_does_not(stub_killed, structbert):
    """The compose health check and the Kubernetes liveness probe (zsc_server.probe) fail on the server
    whose encoder stub died, so an orchestrator restarts it; on a healthy server they pass."""
    from zsc_server.probe import main as probe_main

    assert probe_main(["--url", f"http://{structbert.server.http_url}"]) == 0
    assert stub_killed["server"].is_ready()  # what Triton's own health endpoint still says
    assert probe_main(["--url", f"http://{stub_killed['server'].http_url}"]) == 1


def test_the_model_whose_stub_died_is_reloaded_without_a_restart(stub_killed):
    """What `make serve` does when its probe sees a dead stub (zsc_server.revive): reload the model that the
    error names, through the model-repository API that only the secret's holder may use. Clients over both
    protocols get correct answers again, from the same tritonserver process."""
    from zsc_server.revive import Reviver

    server, load = stub_killed["server"], stub_killed["load"]
    pid = server.process.pid
    [error] = {o.error.message for o in load.outcomes if o.error is not None and "encoder_0_0" in o.error.message}
    assert Reviver(server.http_url, server.admin_secret, pid).revive(Health.failed(error).dead_stubs) == ["encoder"]
    # new clients: a tritonclient.http client stays on the thread that first used it, and these are new threads
    clients = [ZeroShotClient(url, protocol, timeout_s=TIMEOUT_S) for protocol, url in
               (("grpc", server.grpc_url), ("http", server.http_url))]
    try:
        with Load(clients) as after:
            after.wait_for_answers(20, 0, timeout_s=30)
    finally:
        for client in clients:
            client.close()
    assert_every_answer_fits(after.outcomes)
    assert not [o.error for o in after.outcomes if o.error is not None]
    assert {o.client for o in after.outcomes} == set(range(len(clients)))
    assert server.process.pid == pid and server.process.poll() is None


def ended(process: psutil.Process, timeout_s: float = 5.0) -> bool:
    """Whether `process` exits (gone, or a zombie that tritonserver has not reaped) within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_reload_kills_the_replaced_copys_surviving_stubs(stub_killed):
    """preprocess runs two instances: when one's stub dies, the reload replaces both, and the old copy's
    surviving stub (which Triton would keep, idle, until it exits) is killed so it gives its memory back."""
    from zsc_server.revive import Reviver, stub_pids

    server = stub_killed["server"]
    dead, survivor = (stub(server.process.pid, f"preprocess_0_{n}") for n in (0, 1))
    old = {dead.pid: dead, survivor.pid: survivor}
    assert sorted(stub_pids(server.process.pid, "preprocess")) == sorted(old)
    dead.send_signal(signal.SIGKILL)
    assert ended(dead)
    client = ZeroShotClient(server.grpc_url, "grpc", timeout_s=TIMEOUT_S)
    errors = []  # the live instance answers some requests: send until the dead one gets one
    for n in range(50):
        try:
            client.classify(f"物流太慢了 {n}", ["物流", "退款"])
        except ZeroShotClientError as exc:
            errors.append(str(exc))
            break
    assert errors and "preprocess_0_0" in errors[0], errors
    dead = Health.failed(errors[0]).dead_stubs
    assert Reviver(server.http_url, server.admin_secret, server.process.pid).revive(dead) == ["preprocess"]
    assert ended(survivor), "the replaced copy's surviving stub is still running"
    new = stub_pids(server.process.pid, "preprocess")
    assert len(new) == 2 and not set(new) & set(old)
    result = client.classify("物流太慢了", ["物流", "退款"])
    assert sorted(result.labels) == ["物流", "退款"]
    client.close()


def test_the_model_repository_api_is_refused_without_the_secret(structbert):
    """Model control is off for everyone but the launcher: load, unload and index are refused over HTTP and
    gRPC, and every model stays loaded."""
    import tritonclient.grpc
    import tritonclient.http
    from tritonclient.utils import InferenceServerException

    server = structbert.server
    for client in (tritonclient.http.InferenceServerClient(server.http_url),
                   tritonclient.grpc.InferenceServerClient(server.grpc_url)):
        for call, args in ((client.unload_model, ("encoder",)), (client.load_model, ("encoder",)),
                           (client.get_model_repository_index, ())):
            with pytest.raises(InferenceServerException, match="restricted"):
                call(*args)
        assert all(client.is_model_ready(model) for model in ("zero_shot", "preprocess", "encoder", "postprocess"))
        client.close()


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
            load.wait_for_every_client(back, timeout_s=30)
            load.wait_for_answers(20, back, timeout_s=max(0.0, back + 30 - time.monotonic()))
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


def test_make_serve_reloads_a_model_whose_stub_died_under_load(structbert):
    """`make serve`'s launcher sees a stub die (it looks every second; its probe runs only every 60 s
    here) and reloads that model: the same clients get correct answers again, from the same tritonserver,
    and requests fail only between the kill and the reload. First the encoder; then one of preprocess's
    two instances, whose death a probe could miss (the other instance may answer it)."""
    from tests.conftest import launcher_server, serve_launcher

    with serve_launcher(structbert.repository, "--probe-interval-s", "60") as (launcher, _, grpc_port):
        printed = Printed(launcher)
        clients = [ZeroShotClient(f"127.0.0.1:{grpc_port}", "grpc", timeout_s=TIMEOUT_S) for _ in range(3)]
        server_pid = launcher_server(launcher.pid)
        outages = []
        with Load(clients) as load:
            load.wait_for_answers(8, 0, timeout_s=30)
            for instance, model in (("encoder_0_0", "encoder"), ("preprocess_0_0", "preprocess")):
                killed_at = time.monotonic()
                stub(launcher.pid, instance).send_signal(signal.SIGKILL)
                deadline = killed_at + 15
                while time.monotonic() < deadline and not any(f"reloaded {model}" in line for line in printed):
                    time.sleep(0.1)
                assert any(f"reloaded {model}" in line for line in printed), "".join(printed[-20:])
                outages.append((killed_at, time.monotonic()))
                load.wait_for_every_client(outages[-1][1], timeout_s=30)
        assert launcher.poll() is None
        assert launcher_server(launcher.pid) == server_pid, "tritonserver restarted"
        assert_every_answer_fits(load.outcomes)
        assert {o.client for o in load.answered_after(outages[-1][1])} == set(range(len(clients)))
        failed = [o for o in load.outcomes if o.error is not None]
        assert all(any(start < o.ended and o.started < end for start, end in outages) for o in failed), \
            "errors outside the outages"
        print(f"{len(failed)} requests failed in outages of {[round(end - start, 1) for start, end in outages]} s")
        for client in clients:
            client.close()


def test_make_serve_without_revive_restarts_a_server_whose_stub_died(structbert):
    """--no-revive: no model-control API at all, so a dead stub cannot be reloaded (Triton itself keeps
    reporting ready); the probe's failures make the launcher restart tritonserver, which then answers."""
    from tests.conftest import launcher_server, serve_launcher

    # tritonserver's log into the stdout pipe the thread drains: a pipe nobody reads would fill and stall it
    with serve_launcher(structbert.repository, "--probe-interval-s", "1", "--no-revive",
                        stderr=subprocess.STDOUT) as (launcher, _, grpc_port):
        printed = Printed(launcher)
        time.sleep(3)  # a few healthy probes first
        first = launcher_server(launcher.pid)
        stub(launcher.pid, "encoder_0_0").send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("serving again" in line for line in printed):
            time.sleep(0.2)
        assert any("serving again" in line for line in printed), "".join(printed[-20:])
        assert any("Stub process" in line for line in printed)
        assert launcher.poll() is None and launcher_server(launcher.pid) != first
        with ZeroShotClient(f"127.0.0.1:{grpc_port}", "grpc", timeout_s=TIMEOUT_S) as client:
            assert client.classify("我的快递还没到", ["咨询", "投诉"]).labels
