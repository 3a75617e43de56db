"""Run the ``tritonserver`` shipped in the nvidia-pytriton wheel on a model repository, without Docker.

``python -m zsc_server.serve`` (``make serve``) runs it in the foreground; the
tests use the same ``TritonServer`` class. What the Python backend needs here:
- a backends dir holding ``libtriton_python.so`` and the stub built for this
  Python version (the wheel keeps stubs in ``python_backend_stubs/<X.Y>/``);
- this venv's ``bin`` first on ``PATH``: the stub finds its site-packages through it;
- libpython's directory and the wheel's bundled libs on ``LD_LIBRARY_PATH``;
- numpy < 2 in this venv (with numpy 2 the stub passes corrupted tensors).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from zsc_server.gpus import describe, visible_gpus
from zsc_server.probe import probe
from zsc_server.reaper import SHM_PREFIX_FLAG, reap
from zsc_server.revive import ReviveError, Reviver, dead_instances, dead_stubs, model_control_flags, stub_models
from zsc_server.warm_labels import read_warm_labels
from zsc_server.warm_up import WarmUpError, warm_label_cache

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# How every deployment runs Triton (compose, the image and Kubernetes run this launcher too): configs are
# exactly the generated ones, and a model that fails to load stops the server instead of serving half an
# ensemble. The response cache (64 MiB) serves repeated identical requests (same text, labels, template
# and mode) without recomputing them; the ensemble config opts in. The model set is fixed at start:
# model_control_flags() (zsc_server.revive) or --model-control-mode=none.
SERVING_FLAGS = (
    "--disable-auto-complete-config",
    "--strict-readiness=true",
    "--exit-on-error=true",
    "--cache-config=local,size=67108864",
)


class ServerError(RuntimeError):
    """tritonserver could not be started or did not become ready."""


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


def pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("nvidia-pytriton is not installed in this environment: run `make setup`")
    return Path(list(spec.submodule_search_locations)[0])


def check_numpy() -> None:
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        raise ServerError(
            f"numpy {numpy.__version__} is installed; the Triton Python-backend stub needs numpy < 2 "
            "(tensors arrive corrupted otherwise): pip install 'numpy<2'"
        )


def external_triton() -> tuple[Path, Path] | None:
    """A tritonserver installed outside this venv, as `$TRITONSERVER` (the binary) and `$TRITON_BACKENDS`
    (a backends dir whose python/ already holds this interpreter's stub): what the offline GPU-host
    bundle's setup script exports. None: use the pytriton wheel's."""
    binary, backends = os.environ.get("TRITONSERVER"), os.environ.get("TRITON_BACKENDS")
    if not binary:
        return None
    if not backends:
        raise ServerError("TRITONSERVER is set but TRITON_BACKENDS is not: set both, or neither")
    return Path(binary), Path(backends)


def triton_binary() -> Path:
    external = external_triton()
    return external[0] if external else pytriton_dir() / "tritonserver" / "bin" / "tritonserver"


def prepare_backends(target: Path) -> Path:
    """A backends dir with the Python backend and this interpreter's stub side by side."""
    external = external_triton()
    if external:
        return external[1]
    triton = pytriton_dir() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"the pytriton wheel has no Python backend stub for Python {version}")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (triton / "backends" / "python" / "libtriton_python.so",
                   triton / "backends" / "python" / "triton_python_backend_utils.py", stub):
        shutil.copy2(source, python_dir / source.name)
    return target


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    wheel_libs = None if external_triton() else str(pytriton_dir().parent / "nvidia_pytriton.libs")
    libs = [sysconfig.get_config_var("LIBDIR"), wheel_libs]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")])
    # The Python models import zsc_server; make that work from a plain checkout too.
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    return env


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
    ) -> None:
        """revivable: the model-repository API open to holders of `admin_secret` (made here, for this
        server only), so that zsc_server.revive can reload a model whose stub died; otherwise no
        model-control API at all. gpu_metrics: Triton's nv_gpu_* gauges (the NGC image's Triton)."""
        self.repository = Path(repository).resolve()
        self.admin_secret = secrets.token_hex(16) if revivable else None
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.log_path = Path(log_path) if log_path else None
        self.extra_args, self.gpu_metrics = extra_args, gpu_metrics
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
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def command(self, backends: Path) -> list[str]:
        return [
            str(triton_binary()),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            # the wheel (and the GPU-host bundle) keep caches beside the binary, not in /opt/tritonserver
            f"--cache-directory={triton_binary().parents[1] / 'caches'}",
            *SERVING_FLAGS,
            *(model_control_flags(self.admin_secret) if self.admin_secret else ("--model-control-mode=none",)),
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
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
            self.process = subprocess.Popen(
                self.command(backends), env=server_environment(), stdout=output, stderr=subprocess.STDOUT
                if output else None, start_new_session=output is not None,
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

    def wait_until_ready(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode}{self._log_hint()}")
            if self.is_ready():
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


def cpu_encoder_warning(repository: Path) -> str | None:
    """A warning when GPUs are visible but the repository's encoder runs on the CPU: what a plain
    `make export` used to write on a GPU host, and what `--gpu none` still writes."""
    config = repository / "encoder" / "config.pbtxt"
    if not config.is_file() or not re.search(r"kind:\s*KIND_CPU", config.read_text(encoding="utf-8")):
        return None
    gpus = visible_gpus()
    if not gpus:
        return None
    try:
        runtime = json.loads((repository / "encoder" / "export.json").read_text(encoding="utf-8"))["runtime"]
    except (OSError, ValueError, KeyError):
        runtime = "unknown runtime"
    return (f"warning: {describe(gpus)} visible, but the encoder in {repository} was exported to run on the "
            f"CPU ({runtime}); `make export` picks the GPU's profile by itself (or GPU=<card>)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zsc_server.serve",
        description="Run tritonserver (the nvidia-pytriton wheel's, or $TRITONSERVER with $TRITON_BACKENDS, as "
        "in the container image) on a model repository in the foreground, probing it and reloading a model "
        "whose Python-backend stub died; Ctrl-C or SIGTERM stops it cleanly. However the launcher ends, a reaper "
        "process (zsc_server.reaper) then ends tritonserver and its stubs and removes their shared memory.",
    )
    parser.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--ready-timeout-s", type=float, default=300.0)
    parser.add_argument("--probe-interval-s", type=float, default=15.0,
                        help="run a real classification this often (default: 15; 0: never, and no watching "
                             "of the stubs either). A model whose Python-backend stub died (seen in /proc "
                             "every second, or named by a failed probe) is reloaded, unless --no-revive; "
                             "3 failed probes in a row stop the server with exit code 3")
    parser.add_argument("--gpu-metrics", action="store_true",
                        help="let Triton report GPU utilization and memory on its metrics port (nv_gpu_*; "
                             "the container images turn this on; off by default for the CPU-only local runs)")
    parser.add_argument("--cpus", default="",
                        help="run tritonserver and its models on these cores only, e.g. 0 or 0-3 (default: all); "
                             "keeps a load generator on the other cores out of the server's way")
    parser.add_argument("--no-revive", dest="revive", action="store_false",
                        help="run Triton with no model-control API at all (--model-control-mode=none), so a "
                             "dead stub is never reloaded: the probe's 3 failures stop the server. By default "
                             "the model-repository API is open only to this launcher, through a secret made "
                             "for each start (it is on tritonserver's command line, visible to local users)")
    parser.add_argument("--warm-labels", type=Path, default=None,
                        help="embedding mode: a JSON list of label sets, e.g. [{\"labels\": \"a,b,c\", \"template\": "
                             "\"This is about {}.\"}], that every preprocess instance encodes into its label cache "
                             "before the launcher reports ready, and again after it reloads the model")
    return parser


def cpu_list(spec: str) -> set[int]:
    """'1' / '0,2' / '2-3' -> core numbers."""
    cores = set()
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    return cores


def server_for(args: argparse.Namespace) -> TritonServer:
    """The TritonServer that the launcher's parsed command line describes."""
    return TritonServer(args.repository, args.http_port, args.grpc_port, args.metrics_port, args.host,
                        revivable=args.revive, gpu_metrics=args.gpu_metrics)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cpus:  # inherited by tritonserver and every stub it starts
        os.sched_setaffinity(0, cpu_list(args.cpus))
    try:
        warm_labels = read_warm_labels(args.warm_labels) if args.warm_labels else None
    except ValueError as exc:
        print(f"[serve] --warm-labels: {exc}", file=sys.stderr)
        return 2
    server = server_for(args)
    stopping = False

    def on_signal(signum, _frame):
        # Only forward the signal, so that tritonserver starts draining in-flight requests at once; the main
        # thread sees `stopping` and waits for it to exit in server.stop(), then cleans up.
        nonlocal stopping
        stopping = True
        print(f"\n[serve] {signal.Signals(signum).name}: stopping tritonserver ...", flush=True)
        server.terminate()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    warning = cpu_encoder_warning(server.repository)
    if warning:
        print(f"[serve] {warning}", file=sys.stderr, flush=True)
    try:
        server.start()
        print(f"[serve] starting tritonserver on {server.repository} ...", flush=True)
        server.wait_until_ready(args.ready_timeout_s)
    except ServerError as exc:
        stop(server)
        if stopping:
            return 0
        print(f"[serve] {exc}", file=sys.stderr)
        return 1

    def warm_up(models: list[str] | None = None) -> None:
        if warm_labels and (models is None or "preprocess" in models):
            warm(server.http_url, warm_labels)

    warm_up()
    print(
        f"[serve] ready: HTTP http://{server.http_url}  gRPC {server.grpc_url}  "
        f"metrics http://{server._client_host}:{server.metrics_port}/metrics\n"
        f"[serve] try: zsc classify --url {server.grpc_url} --labels '咨询,投诉,建议' '我的快递还没到'",
        flush=True,
    )
    code = watch(server, args.probe_interval_s, lambda: stopping, warm_up)
    exit_code = stop(server)
    if code == UNHEALTHY_EXIT:
        return code
    print(f"[serve] tritonserver exited with code {exit_code}", flush=True)
    return 0 if stopping else exit_code


def stop(server: TritonServer) -> int | None:
    """server.stop(), printing what it had to do beyond a SIGTERM."""
    code = server.stop()
    for note in server.shutdown_notes:
        print(f"[serve] {note}", flush=True)
    return code


UNHEALTHY_EXIT = 3
PROBE_FAILURES = 3
# Longer than the encoder's queue timeout (10 s unless exported otherwise): a busy server refuses the probe
# (it passes, see zsc_server.probe) before the probe gives up (it fails). The compose and Kubernetes
# probes use the same (tests/unit/test_deploy.py).
PROBE_TIMEOUT_S = 15.0
STUB_CHECK_S = 1.0  # how often the launcher looks for dead stubs (in /proc), between probes


def warm(http_url: str, warm_labels: str) -> None:
    """Warm every preprocess instance's label cache (zsc_server.warm_up), saying what was done; a failure
    is reported and the server goes on (a cold cache is slower, not wrong)."""
    try:
        result = warm_label_cache(http_url, warm_labels)
    except WarmUpError as exc:
        print(f"[serve] label cache warm-up failed, the cache starts cold: {exc}", file=sys.stderr, flush=True)
        return
    if result is None:
        print("[serve] --warm-labels ignored: this export has no label cache (NLI mode, or --label-cache-mb 0)",
              file=sys.stderr, flush=True)
        return
    for error in result.errors:
        print(f"[serve] not warmed: {error}", file=sys.stderr, flush=True)
    print(f"[serve] {result.summary()}", flush=True)


def watch(server: TritonServer, interval_s: float, stopping, on_reload=None) -> int | None:
    """Wait for tritonserver to exit (returns its exit code) or for `stopping()` (returns None), running the
    inference probe every `interval_s` meanwhile. Triton 2.51 keeps a model "ready" after its Python-backend
    stub died and fails every request that reaches it, so the launcher also looks at the stubs every
    STUB_CHECK_S: when one has died it reloads that model at once (zsc_server.revive), and when a probe
    fails naming a dead stub, that one. After PROBE_FAILURES failed probes in a row it returns
    UNHEALTHY_EXIT: main() stops tritonserver, for whatever supervises the launcher (a shell loop, systemd,
    Docker's restart policy, Kubernetes) to restart it. `on_reload` gets the models reloaded (the label
    cache's warm-up: a reloaded preprocess starts with empty caches)."""
    url, pid = f"http://{server.http_url}", server.process.pid
    reviver = Reviver(server.http_url, server.admin_secret, pid) if server.admin_secret else None
    failures, stubs, next_probe = 0, stub_models(pid), time.monotonic() + interval_s
    while not stopping():
        try:
            return server.process.wait(timeout=min(interval_s, STUB_CHECK_S) if interval_s > 0 else STUB_CHECK_S)
        except subprocess.TimeoutExpired:
            pass
        if stopping() or interval_s <= 0:
            continue
        alive = stub_models(pid)
        died = sorted({model for stub, model in stubs.items() if stub not in alive})
        stubs = alive
        if not died and time.monotonic() < next_probe:
            continue
        problem = None
        if died and reviver is not None:
            problem = reload(reviver.replace, died, f"a stub of {', '.join(died)} died", on_reload)
        problem = problem or probe(url, "zero_shot", PROBE_TIMEOUT_S)
        if problem and reviver is not None and dead_instances(problem):
            problem = reload(reviver.revive, problem, problem, on_reload) or probe(url, "zero_shot", PROBE_TIMEOUT_S)
        stubs, next_probe = stub_models(pid), time.monotonic() + interval_s
        failures = failures + 1 if problem else 0
        if problem:
            print(f"[serve] health probe failed ({failures}/{PROBE_FAILURES}): {problem}", flush=True)
        if failures >= PROBE_FAILURES:
            print(f"[serve] the server stopped answering: stopping it (exit {UNHEALTHY_EXIT}); restart it",
                  file=sys.stderr, flush=True)
            return UNHEALTHY_EXIT
    return None


def reload(how, what, why: str, on_reload=None) -> str | None:
    """Reload models with `how(what)` (Reviver.replace or Reviver.revive), then `on_reload(models)`: None once
    reloaded, else the problem, with what failed."""
    started = time.monotonic()
    try:
        models = how(what)
    except ReviveError as exc:
        return f"{why}; reloading failed: {exc}"
    if not models:
        return why
    print(f"[serve] {why}: reloaded {', '.join(models)} in {time.monotonic() - started:.1f} s", flush=True)
    if on_reload is not None:
        on_reload(models)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
