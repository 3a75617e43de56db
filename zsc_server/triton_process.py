"""One ``tritonserver`` process on a model repository: started with the serving flags, waited on until ready,
stopped cleanly, its shared memory reaped however it ends.

``python -m zsc_server.serve`` (``make serve``) supervises it (zsc_server.supervisor); the tests and
benchmarks start the same ``TritonServer`` class directly. Which tritonserver and what its Python backend
needs: zsc_server.triton_install.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from zsc_server.admin_api import restriction_flags
from zsc_server.reaper import SHM_PREFIX_FLAG, reap, restrict_regions
from zsc_server.revive import MODEL_CONTROL_FLAGS, dead_stubs, stub_models
from zsc_server.triton_install import (
    PROJECT_ROOT,
    ServerError,
    check_numpy,
    prepare_backends,
    server_environment,
    triton_binary,
)

# How every deployment runs Triton (compose, the image and Kubernetes run this launcher too): configs are
# exactly the generated ones, and a model that fails to load stops the server instead of serving half an
# ensemble. The model set is fixed at start: MODEL_CONTROL_FLAGS (zsc_server.revive) or
# --model-control-mode=none; the APIs inference does not need are restricted (zsc_server.admin_api).
SERVING_FLAGS = (
    "--disable-auto-complete-config",
    "--strict-readiness=true",
    "--exit-on-error=true",
)
# The response cache (64 MiB) serves repeated identical requests (same text, labels, template and mode)
# without recomputing them; the ensemble config opts in. Its answer time tells a caller whether anyone
# sent the same input before (0.5 ms against 50 ms, measured), so the launcher leaves it off where the
# server is exposed beyond this host (zsc_server.serve --response-cache).
RESPONSE_CACHE_FLAG = "--cache-config=local,size=67108864"
# Files tritonserver and its stubs create (admission control's state, traces) are theirs alone. The stubs'
# shared-memory regions, which hold the texts of requests in flight, Boost makes 0644 whatever the umask:
# reaper.restrict_regions narrows them once the server is ready, and the supervisor after each reload.
SERVER_UMASK = 0o077


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on loopback right now (all bound at once, so no repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# How long tritonserver may go on waiting, with no stub alive, for instances whose stub died (see
# TritonServer._wait_for_exit): longer than the 1 s that Triton gives a stub to show it is healthy while
# it unloads a model whose stub died, and the SIGKILL and reaping that follow.
STUCK_UNLOAD_S = 3.0


def start_reaper(shm_prefix: str) -> subprocess.Popen:
    """zsc_server.reaper for the tritonserver that is about to start with `shm_prefix`, watching this process
    (its parent: it sees this process end, however it ends), in a session of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "zsc_server.reaper", "--prefix", shm_prefix, "--owner", str(os.getpid())],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])),
    )


class TritonServer:
    """A tritonserver process on a model repository; a context manager that waits for readiness."""

    def __init__(
        self,
        repository: str | Path,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        host: str = "127.0.0.1",
        log_path: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        revivable: bool = True,
        gpu_metrics: bool = False,
        http_host: str | None = None,
        grpc_host: str | None = None,
        open_apis: tuple[str, ...] = (),
        response_cache: bool = True,
        nice: int = 0,
    ) -> None:
        """Every API that inference does not need is open only to holders of `admin_secret`, made here for
        this server (zsc_server.admin_api), but `open_apis`. revivable: model control on, so that
        zsc_server.revive can reload a model whose stub died; otherwise no model-control API at all.
        gpu_metrics: Triton's nv_gpu_* gauges (the NGC image's Triton). http_host, grpc_host: where those
        APIs bind, when not at `host` (behind the launcher's fronts: loopback). response_cache: Triton's
        response cache for the models that opt in. nice: run tritonserver and its stubs this much below the
        calling process's CPU priority (the launcher's fronts, which refuse excess load, come first)."""
        self.repository = Path(repository).resolve()
        self.admin_secret = secrets.token_hex(16)
        self.revivable, self.open_apis, self.response_cache = revivable, tuple(open_apis), response_cache
        restriction_flags(self.admin_secret, self.open_apis)  # an unknown API name fails here, not at start
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.http_host, self.grpc_host = http_host or host, grpc_host or host
        self.log_path = Path(log_path) if log_path else None
        self.extra_args, self.gpu_metrics, self.nice = extra_args, gpu_metrics, nice
        # Names this server's stubs and shared memory, for zsc_server.reaper (random: several servers may run)
        self.shm_prefix = f"zsc_{secrets.token_hex(8)}_"
        self.process: subprocess.Popen | None = None
        self._terminated = False
        self.shutdown_notes: list[str] = []  # what stop() had to do beyond a plain SIGTERM, for the log
        self.reaped: dict | None = None  # the reaper's report: what tritonserver left behind
        self._reaper: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None

    @property
    def http_url(self) -> str:
        return f"{client_host(self.http_host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{client_host(self.grpc_host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{client_host(self.host)}:{self.metrics_port}/metrics"

    def command(self, backends: Path) -> list[str]:
        return [
            str(triton_binary()),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            # the wheel (and the GPU-host bundle) keep caches beside the binary, not in /opt/tritonserver
            f"--cache-directory={triton_binary().parents[1] / 'caches'}",
            *SERVING_FLAGS,
            *((RESPONSE_CACHE_FLAG,) if self.response_cache else ()),
            *(MODEL_CONTROL_FLAGS if self.revivable else ("--model-control-mode=none",)),
            *restriction_flags(self.admin_secret, self.open_apis),
            f"--http-address={self.http_host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.grpc_host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true", f"--allow-gpu-metrics={str(self.gpu_metrics).lower()}",
            f"{SHM_PREFIX_FLAG}{self.shm_prefix}",
            *self.extra_args,
        ]

    def start(self) -> TritonServer:
        check_numpy()
        if not (self.repository / "zero_shot" / "config.pbtxt").is_file():
            raise ServerError(f"{self.repository} has no exported model: run `make export` first")
        self._workdir = tempfile.TemporaryDirectory(prefix="zsc-triton-")
        backends = prepare_backends(Path(self._workdir.name) / "backends")
        self._reaper = start_reaper(self.shm_prefix)  # first: from here on, nothing of this server can outlive us
        output = open(self.log_path, "wb") if self.log_path else None  # noqa: SIM115 - closed in stop()
        self._log_file = output
        try:
            niced = ["nice", "-n", str(self.nice)] if self.nice and shutil.which("nice") else []
            self.process = subprocess.Popen(
                niced + self.command(backends), env=server_environment(self.admin_secret), stdout=output,
                stderr=subprocess.STDOUT if output else None, start_new_session=output is not None, umask=SERVER_UMASK,
            )
        except OSError:
            self.stop()
            raise
        try:
            self._reaper.stdin.write(f"server {self.process.pid}\n".encode())
            self._reaper.stdin.flush()
        except OSError as exc:  # it is gone: nothing would clean up after this server
            self.stop()
            raise ServerError(f"zsc_server.reaper exited at start ({exc}); its error is above") from exc
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_until_ready(self, timeout_s: float = 180.0, cancelled=lambda: False) -> None:
        """Raises ServerError when tritonserver exits, is not ready by `timeout_s`, or `cancelled()`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cancelled():
                raise ServerError("stopped before it was ready")
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode}{self._log_hint()}")
            if self.is_ready():
                restrict_regions(self.shm_prefix)
                return
            time.sleep(0.5)
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f}s{self._log_hint()}")

    def _log_hint(self) -> str:
        if not self.log_path or not self.log_path.is_file():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
        return f"; last lines of {self.log_path}:\n" + "\n".join(tail)

    def terminate(self) -> None:
        """SIGTERM tritonserver (once: it drains in-flight requests, unloads the models and exits)."""
        if self.process is not None and self.process.poll() is None and not self._terminated:
            self._terminated = True
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 45.0) -> int | None:
        """SIGTERM tritonserver and wait for it (SIGKILL after `timeout_s`, or as soon as it waits only for
        model copies whose stub died); then the reaper removes whatever it left. Returns its exit code;
        `shutdown_notes` says what had to be done beyond the SIGTERM."""
        # the timeout is longer than tritonserver's own 30 s exit timeout, which HTTP keep-alive connections use up
        code = None
        if self.process is not None and self.process.poll() is None:
            self.terminate()
            code = self._wait_for_exit(timeout_s)
        elif self.process is not None:
            code = self.process.returncode
        if self._reaper is not None:
            self._collect_reaper()  # it also removes admission control's shared state
        if getattr(self, "_log_file", None):
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
        return code

    def _wait_for_exit(self, timeout_s: float) -> int:
        """Triton 2.51 never finishes unloading a model copy whose stub died (the copy a reload replaced, or
        with --no-revive the model itself): its shutdown waits for it until the exit timeout (30 s, exit 1).
        Once none of its stubs is alive and a dead one is still unreaped (Triton reaps a stub only when it
        finalizes its instance) for STUCK_UNLOAD_S, that is all it waits for: SIGKILL it."""
        deadline, stuck_since = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            try:
                return self.process.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
            dead = dead_stubs(self.process.pid) if not stub_models(self.process.pid) else []
            stuck_since = (stuck_since or time.monotonic()) if dead else None
            if stuck_since is not None and time.monotonic() - stuck_since >= STUCK_UNLOAD_S:
                self.shutdown_notes.append(
                    f"every model in service had unloaded; tritonserver still waited for {len(dead)} model "
                    "instance(s) whose stub had died, which Triton never finishes unloading: killed it")
                break
        else:
            self.shutdown_notes.append(f"tritonserver was still running {timeout_s:.0f} s after SIGTERM: killed it")
        self.process.kill()
        return self.process.wait()

    def _collect_reaper(self) -> None:
        try:
            output, _ = self._reaper.communicate(b"stop\n", timeout=30)
            report = json.loads(output.decode().strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
            self._reaper.kill()
            self._reaper.wait()
            self.shutdown_notes.append(f"the reaper did not report ({exc!r}): removing leftovers here")
            report = reap(self.shm_prefix)
        self._reaper = None
        if report["killed"]:
            names = sorted(set(report["killed"].values()))
            self.shutdown_notes.append(
                f"killed {len(report['killed'])} process(es) that tritonserver left running ({', '.join(names)})")
        if report["regions"]:
            self.shutdown_notes.append(f"removed {len(report['regions'])} shared-memory region(s) it left")
        self.reaped = report

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def client_host(bound: str) -> str:
    """Where a client on this host reaches a server bound at `bound` (every interface: loopback)."""
    return "127.0.0.1" if bound in ("0.0.0.0", "", "::") else bound
