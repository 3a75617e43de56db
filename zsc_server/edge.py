"""The edge proxy: haproxy on the public ports in front of the launcher's fronts, refusing overload in C.

Under a burst of several times the capacity, the Python fronts spend about 0.3 ms of CPU on each refusal, CPU
the encoder needs on a small machine; haproxy spends about 0.1 ms. So where haproxy is installed (the CPU
image has it) the launcher puts it on the public HTTP and gRPC ports and the fronts move to loopback behind
it. The fronts still check and bound every request; the edge only decides how many calls go on to them at
once (`edge_in_flight`: a share of the fronts' own adaptive bound, which the launcher copies into haproxy
through its runtime API as it moves), lets a few more wait briefly, and refuses the rest as busy.
Configuration: zsc_server/haproxy/haproxy.cfg; the policy's numbers: zsc_server.batching_policy.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from zsc_server.admission import FrontGate
from zsc_server.batching_policy import EDGE_BUDGET_SHARE, EDGE_MIN_IN_FLIGHT, EDGE_QUEUE

CONFIG = Path(__file__).with_name("haproxy") / "haproxy.cfg"
BACKENDS = ("grpc_fronts", "http_fronts")  # as haproxy.cfg names them, each with one server "fronts"
EDGE_MODES = ("auto", "on", "off")
FOLLOW_INTERVAL_S = 0.25  # how often the edge's limit follows the fronts' bound
START_TIMEOUT_S = 10.0


class EdgeError(RuntimeError):
    pass


def find_haproxy() -> str | None:
    """haproxy's path: on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH)."""
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)


def edge_wanted(mode: str, front: str, gate: FrontGate | None, haproxy: str | None) -> tuple[bool, str]:
    """Whether the launcher runs the edge (`--edge`, with `--front`), and why, for its start-up line. It stands
    in front of both fronts and follows their admission bound, so it needs both and an export with admission
    control (the CPU exports); EdgeError for `--edge on` where it cannot run."""
    if mode == "off":
        return False, "off (--edge off)"
    why_not = ("the edge stands in front of both fronts (--front on)" if front != "on"
               else "admission control is off for this export, and the edge follows its bound" if gate is None
               else "haproxy is not installed (apt-get install haproxy): the fronts refuse bursts themselves"
               if haproxy is None else None)
    if why_not and mode == "on":
        raise EdgeError(f"--edge on: {why_not}")
    return (False, f"off ({why_not})") if why_not else (True, "haproxy on the public ports, the fronts behind it on "
                                                              "loopback")


def edge_in_flight(gate: FrontGate, now: float | None = None) -> int:
    """The calls the edge lets on to the fronts at once: EDGE_BUDGET_SHARE of the answers the server gives
    correctly in the admission budget, never fewer than EDGE_MIN_IN_FLIGHT."""
    budget_s = gate.settings.budget_ms / 1e3
    return max(EDGE_MIN_IN_FLIGHT, math.floor(gate.answers_per_s(now) * budget_s * EDGE_BUDGET_SHARE))


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening at host:port, inheritable by haproxy (`bind fd@N`)."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind, past TIME_WAIT
        listener.bind((host, port))
        listener.listen(1024)
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener


def dies_with_the_launcher(command: list[str]) -> list[str]:
    """`command` run so that the kernel sends it SIGTERM when the launcher's thread that started it ends (the
    main thread, or the watcher: however the launcher dies, haproxy frees the ports): util-linux's setpriv,
    essential on Debian. Not a preexec_fn: forking the launcher, whose gRPC front runs threads, must run no
    Python in the child (measured: haproxy aborted at start, and the front's poller lost its descriptor)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *command] if setpriv else command


class Edge:
    """haproxy with zsc_server/haproxy/haproxy.cfg at host:http_port and host:grpc_port (bound at once), in front
    of the fronts on loopback (`in_front_of`); started again if it exits while the launcher runs. queue_ms: the
    longest a call waits in the edge's queue, the admission budget where the launcher runs it."""

    def __init__(self, haproxy: str, host: str, http_port: int, grpc_port: int, queue_ms: float,
                 max_in_flight: int = EDGE_MIN_IN_FLIGHT, queue: int = EDGE_QUEUE) -> None:
        self.haproxy, self.host = haproxy, host
        self.max_in_flight, self.queue, self.queue_ms = max_in_flight, queue, queue_ms
        # the public ports are bound here, before the fronts bind theirs, and handed to haproxy: nothing else can
        # take them until haproxy starts, and they stay bound while a haproxy that exited is started again
        self._listeners = [listening_socket(host, port) for port in (http_port, grpc_port)]
        # as bound (port 0: a free one)
        self.http_port, self.grpc_port = (listener.getsockname()[1] for listener in self._listeners)
        # the runtime API on a socket pair, no file: only this process can reach it, and nothing is left behind
        # however the launcher ends; each command is a connection whose other end goes to haproxy over the pair
        self._api, self._api_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._api_end.set_inheritable(True)
        self.environment = {
            **os.environ, "ZSC_EDGE_SOCKET": f"sockpair@{self._api_end.fileno()}",
            "ZSC_EDGE_HTTP_FD": str(self._listeners[0].fileno()), "ZSC_EDGE_GRPC_FD": str(self._listeners[1].fileno()),
            "ZSC_EDGE_MAXCONN": str(max_in_flight), "ZSC_EDGE_QUEUE": str(queue),
            "ZSC_EDGE_QUEUE_MS": f"{queue_ms:.0f}",
        }
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # start() from the watcher against stop()
        self._threads: list[threading.Thread] = []

    def describe(self) -> str:
        return (f"calls on to the fronts at once: {EDGE_BUDGET_SHARE:g} x the correct answers of one admission "
                f"budget, at least {EDGE_MIN_IN_FLIGHT}; {self.queue} more wait up to {self.queue_ms:g} ms; the rest "
                "are refused as busy")

    def in_front_of(self, upstream_http_port: int, upstream_grpc_port: int) -> Edge:
        """The fronts' ports on loopback, where haproxy sends the calls it lets through."""
        self.environment.update(ZSC_UPSTREAM_HTTP_PORT=str(upstream_http_port),
                                ZSC_UPSTREAM_GRPC_PORT=str(upstream_grpc_port))
        return self

    def check(self) -> str:
        """haproxy's verdict on the configuration with these settings ('' when valid)."""
        checked = subprocess.run([self.haproxy, "-c", "-q", "-f", str(CONFIG)], env=self.environment,
                                 capture_output=True, text=True, timeout=30)
        return "" if checked.returncode == 0 else (checked.stdout + checked.stderr).strip()

    def start(self) -> Edge:
        """Runs haproxy on the bound ports and waits until its runtime API answers; EdgeError when it exits or
        does not answer (stop() then removes what is left)."""
        with self._lock:
            # its output (alerts only: no log is configured; -q: not a line per proxy at a stop) goes to the
            # launcher's; a process group of its own, so that Ctrl-C at a terminal (sent to the launcher's group)
            # leaves it to the launcher, which soft-stops it. Not a session of its own: the kernel's autogroup
            # scheduling would then weigh haproxy against tritonserver as two equal groups, and on a busy core
            # its refusals waited ~20 ms for a turn instead of ~0.5 ms (tritonserver runs below the launcher's
            # priority, which counts only within one session)
            self.process = subprocess.Popen(dies_with_the_launcher([self.haproxy, "-db", "-q", "-f", str(CONFIG)]),
                                            env=self.environment, stdin=subprocess.DEVNULL, process_group=0,
                                            pass_fds=[s.fileno() for s in (*self._listeners, self._api_end)])
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None:
                raise EdgeError(f"haproxy exited with code {self.process.returncode} at start (its error is above)")
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                raise EdgeError(f"haproxy did not start within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)
        if not self._threads:
            self._threads = [threading.Thread(target=self._watch, name="edge-watch", daemon=True)]
            self._threads[0].start()
        return self

    def _answers(self) -> bool:
        """haproxy's runtime API answers: it has parsed its configuration and serves the inherited ports."""
        try:
            return "Name:" in self.command("show info")
        except OSError:
            return False

    def _watch(self) -> None:
        """haproxy should never exit while the launcher runs; if it does, it is started again."""
        while not self._stopping.is_set():
            code = self.process.wait()
            if self._stopping.is_set():
                return
            print(f"[serve] the edge proxy (haproxy) exited with code {code}: starting it again", flush=True)
            time.sleep(0.5)
            try:
                self.start()
                self.set_max_in_flight(self.max_in_flight, force=True)
            except EdgeError as exc:
                print(f"[serve] the edge proxy: {exc}", flush=True)

    def follow(self, gate: FrontGate, interval_s: float = FOLLOW_INTERVAL_S) -> None:
        """Keeps the edge's limit at edge_in_flight(gate), checked every interval_s, in a daemon thread."""

        def run() -> None:
            while not self._stopping.wait(interval_s):
                try:
                    self.set_max_in_flight(edge_in_flight(gate))
                except (OSError, EdgeError):  # haproxy restarting: the watcher sets it again
                    pass

        thread = threading.Thread(target=run, name="edge-follow", daemon=True)
        thread.start()
        self._threads.append(thread)

    def set_max_in_flight(self, value: int, force: bool = False) -> None:
        """The calls that go on to the fronts at once, per protocol (haproxy's server maxconn)."""
        if value == self.max_in_flight and not force:
            return
        reply = self.command(";".join(f"set maxconn server {backend}/fronts {value}" for backend in BACKENDS))
        if reply.strip():
            raise EdgeError(f"haproxy refused the new limit {value}: {reply.strip()}")
        self.max_in_flight = value

    def command(self, line: str) -> str:
        """One runtime API command line (commands joined by ';'), haproxy's reply."""
        connection, haproxy_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with connection:
            try:
                socket.send_fds(self._api, [b"\0"], [haproxy_end.fileno()])
            finally:
                haproxy_end.close()
            connection.settimeout(2.0)
            connection.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Stops listening at once and lets the calls in flight finish for up to drain_timeout_s (haproxy's soft
        stop), then ends it."""
        self._stopping.set()
        with self._lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGUSR1)
        for listener in self._listeners:  # with haproxy's own copies closed by its soft stop, new calls are refused
            listener.close()
        if process is not None and process.poll() is None:
            try:
                process.wait(drain_timeout_s)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._api.close()
        self._api_end.close()
