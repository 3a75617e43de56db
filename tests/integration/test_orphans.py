"""Nothing outlives its tritonserver: however tritonserver or the launcher ends (SIGTERM, SIGKILL, a crash),
within a few seconds no process of that server (tritonserver, a Python-backend stub) runs and none of its
shared-memory regions is left in /dev/shm (zsc_server.reaper). Each test starts its own servers under load
(a stub that tritonserver leaves mid-request is the one that hangs), on the structbert fixture's repository,
and looks only at its own server: by the shared-memory prefix that each TritonServer gets, which its
command line, its stubs' and its regions' names carry, and by the pids seen before the kill. Other
tritonservers on the same machine are never touched.

Without the reaper, a SIGKILLed tritonserver under load left 1 to 3 of its 4 stubs running (forever) in
7 of 14 tries here, and a SIGKILLed launcher left tritonserver itself running.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import ARTIFACTS, Printed, launcher_server, serve_launcher
from tests.faults import Load, stub
from zsc_client import ZeroShotClient
from zsc_server.reaper import SHM_PREFIX_FLAG
from zsc_server.triton_process import TritonServer, free_ports

# "A few seconds": the reaper gives stubs 1 s to leave on their own after tritonserver has gone
GONE_WITHIN_S = 5.0
STUBS = 4  # preprocess ×2, encoder, postprocess


@pytest.fixture(autouse=True)
def no_core_files():
    """The crash cases end processes with SIGSEGV: no core files in the work tree, whatever the host's limit."""
    before = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, before[1]))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, before)


class Footprint:
    """What belongs to one tritonserver: its pid, its stubs' pids and its shared-memory prefix."""

    def __init__(self, server_pid: int) -> None:
        server = psutil.Process(server_pid)
        [flag] = [arg for arg in server.cmdline() if arg.startswith(SHM_PREFIX_FLAG)]
        self.prefix = flag[len(SHM_PREFIX_FLAG):]
        self.started: dict[int, float] = {}  # pid: creation time, so that a reused pid is not taken for ours
        self.add([server, *server.children()])
        assert len(self.started) == 1 + STUBS, f"expected tritonserver and {STUBS} stubs: {self.started}"
        assert len(self.regions()) == STUBS, f"expected {STUBS} regions {self.prefix}*: {self.regions()}"

    def add(self, processes: list[psutil.Process]) -> None:
        self.started.update({process.pid: process.create_time() for process in processes})

    def regions(self) -> list[str]:
        return sorted(path.name for path in Path("/dev/shm").glob(f"{self.prefix}*"))

    def running(self) -> list[str]:
        """Processes of this server still running (zombies have ended): the pids seen before, and any process
        whose command line carries the prefix (the reaper too: it must end once it has done its work)."""
        found = []
        for process in psutil.process_iter(["cmdline", "status", "create_time"]):
            info = process.info
            ours = self.started.get(process.pid) == info["create_time"] or any(
                self.prefix in arg for arg in info["cmdline"] or ())
            if ours and info["status"] != psutil.STATUS_ZOMBIE:
                found.append(f"{process.pid} {' '.join(info['cmdline'] or ())[:150]}")
        return found

    def wait_until_gone(self, since: float) -> float:
        """Seconds from `since` (when tritonserver or the launcher has ended) until nothing of this server is
        left; fails after GONE_WITHIN_S."""
        while time.monotonic() < since + GONE_WITHIN_S:
            if not self.running() and not self.regions():
                return time.monotonic() - since
            time.sleep(0.05)
        pytest.fail(f"{GONE_WITHIN_S:.0f} s after the end, still running: {self.running()}; "
                    f"regions: {self.regions()}")


@contextlib.contextmanager
def load_on(grpc_url: str):
    """Three gRPC clients sending back to back (answers checked), so that stubs are mid-request at the kill."""
    clients = [ZeroShotClient(grpc_url, "grpc", timeout_s=20) for _ in range(3)]
    try:
        with Load(clients) as load:
            load.wait_for_answers(6, 0, timeout_s=30)
            yield load
    finally:
        for client in clients:
            client.close()
    # whatever the kill did to requests in flight, none was answered with another request's labels
    wrong = [(outcome.request, outcome.problem) for outcome in load.outcomes if outcome.problem]
    assert not wrong, f"{len(wrong)} answers do not fit their requests: {wrong[:3]}"


CRASH = signal.SIGSEGV  # what a crash ends a process with; sent here, the process gets no say either


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGKILL, signal.SIGKILL, CRASH, signal.SIGTERM],
                         ids=["sigkill-1", "sigkill-2", "sigkill-3", "crash", "sigterm"])
def test_nothing_outlives_a_tritonserver_killed_under_load(structbert, how):
    """tritonserver (started by TritonServer, as in these tests and the launcher) ends by `how` while
    clients send requests: within seconds of its end its stubs and regions are gone, before anyone calls
    stop()."""
    ARTIFACTS.mkdir(exist_ok=True)
    http, grpc, metrics = free_ports(3)
    server = TritonServer(structbert.repository, http, grpc, metrics, log_path=ARTIFACTS / "triton-orphans.log",
                          extra_args=("--exit-timeout-secs=5",)).__enter__()
    try:
        footprint = Footprint(server.process.pid)
        with load_on(server.grpc_url):
            server.process.send_signal(how)
            server.process.wait(timeout=30)
            took = footprint.wait_until_gone(time.monotonic())
    finally:
        server.stop()
    print(f"{signal.Signals(how).name}: tritonserver exited {server.process.returncode}, nothing left after "
          f"{took:.1f} s; reaper: {server.reaped}")
    assert server.reaped is not None and server.reaped["why"] == "tritonserver exited"


@pytest.mark.parametrize("how", ["sigkill", "group-sigkill", "crash", "sigterm"])
def test_nothing_outlives_a_launcher_killed_under_load(structbert, how):
    """`make serve`'s launcher ends by `how` (its whole process group at once for group-sigkill, as
    `kill -9 -PGID` or a terminal hang-up would) while clients send requests: tritonserver, its stubs and
    its regions are gone within seconds of the launcher's end; on SIGTERM the launcher stops them itself and
    exits 0."""
    with serve_launcher(structbert.repository, "--probe-interval-s", "60") as (launcher, _, grpc_port):
        server_pid = launcher_server(launcher.pid)
        footprint = Footprint(server_pid)
        with load_on(f"127.0.0.1:{grpc_port}"):
            if how == "group-sigkill":
                os.killpg(launcher.pid, signal.SIGKILL)
            else:
                launcher.send_signal({"crash": CRASH, "sigterm": signal.SIGTERM}.get(how, signal.SIGKILL))
            code = launcher.wait(timeout=60)
            took = footprint.wait_until_gone(time.monotonic())
    print(f"{how}: launcher exited {code}, nothing left after {took:.1f} s")
    if how == "sigterm":
        assert code == 0


def test_a_stop_after_a_stub_reload_is_quick_and_clean(structbert):
    """After the launcher reloaded a model whose stub died, the replaced copy never finishes unloading in
    Triton 2.51: its shutdown used to wait out the 30 s exit timeout and exit 1. Now, once every model in
    service has unloaded and only dead stubs' instances are left, the launcher kills tritonserver, says so,
    and exits 0 well within that timeout, with nothing left behind."""
    with serve_launcher(structbert.repository, "--probe-interval-s", "60") as (launcher, _, grpc_port):
        printed = Printed(launcher)
        server_pid = launcher_server(launcher.pid)
        footprint = Footprint(server_pid)
        with load_on(f"127.0.0.1:{grpc_port}"):
            stub(launcher.pid, "encoder_0_0").send_signal(signal.SIGKILL)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not any("reloaded encoder" in line for line in printed):
                time.sleep(0.1)
            assert any("reloaded encoder" in line for line in printed), "".join(printed[-20:])
        footprint.add(psutil.Process(server_pid).children())  # the reloaded encoder's new stub
        stopping = time.monotonic()
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=60)
        took = time.monotonic() - stopping
        printed.reader.join(5)
        footprint.wait_until_gone(time.monotonic())
    shutdown = "".join(printed[next(i for i, line in enumerate(printed) if "SIGTERM: stopping" in line):])
    print(f"stopped in {took:.1f} s, exit code {code}:\n{shutdown}")
    assert code == 0, "".join(printed[-10:])
    # Triton's exit timeout is 30 s; STUCK_UNLOAD_S (3 s) plus unloading the models took 5-10 s on this shared
    # 2-core machine
    assert took < 20, f"stopping took {took:.1f} s:\n{shutdown}"
