"""The server a measurement runs against, in one place: its URLs (given, or derived from the gRPC address with
Triton's default ports), the configs it serves, its Prometheus counters, and, when it runs on this machine, its
processes: CPU time by process, the RSS of tritonserver and its stubs, nvidia-smi samples. `serve` starts one
for a measurement, on free ports, with the response cache off (so that every answer is compute)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from loadtest.server_metrics import scrape
from loadtest.workload import export_facts
from zsc_server.admin_api import ADMIN_HEADER, GRPC_ADMIN_METADATA
from zsc_server.gpus import query as gpus_query
from zsc_server.revive import stub_models

DEFAULT_HTTP_PORT, DEFAULT_METRICS_PORT = 8000, 8002
LOCAL_HOSTS = ("127.0.0.1", "localhost")
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Target:
    grpc_url: str  # host:port
    http_url: str  # host:port
    metrics_url: str  # http://host:port/metrics, or "none"
    admin_key: str = ""  # the server's secret: perf_analyzer reads the restricted statistics API with it
    pid: int | None = None  # tritonserver's, when this process started it

    @classmethod
    def from_urls(cls, grpc_url: str, http_url: str = "", metrics_url: str = "", admin_key: str = "") -> Target:
        """A running server at `grpc_url`; HTTP and metrics at Triton's default ports on its host unless given."""
        host = grpc_url.rsplit(":", 1)[0]
        http = (http_url or f"{host}:{DEFAULT_HTTP_PORT}").removeprefix("http://").rstrip("/")
        metrics = metrics_url or f"http://{http.rsplit(':', 1)[0]}:{DEFAULT_METRICS_PORT}"
        if metrics != "none":  # host:port, as the other URLs are given, is Triton's endpoint there
            metrics = metrics if "://" in metrics else f"http://{metrics}"
            metrics = metrics if urllib.parse.urlsplit(metrics).path.strip("/") else f"{metrics.rstrip('/')}/metrics"
        return cls(grpc_url, http, metrics, admin_key)

    def check_ready(self, protocol: str = "grpc") -> Target:
        """This Target, once its ensemble answers readiness over `protocol`; ValueError naming the address if not."""
        from zsc_client import ZeroShotClient

        with ZeroShotClient(self.url(protocol), protocol, timeout_s=5) as client:
            if not client.is_ready():
                raise ValueError(f"--{protocol}-url {self.url(protocol)}: no server there with {client.model_name} "
                                 "ready")
        return self

    def url(self, protocol: str) -> str:
        return self.grpc_url if protocol == "grpc" else self.http_url

    def header_flags(self, protocol: str) -> list[str]:
        """perf_analyzer's -H flags that carry the admin secret, if any."""
        if not self.admin_key:
            return []
        return ["-H", f"{GRPC_ADMIN_METADATA if protocol == 'grpc' else ADMIN_HEADER}:{self.admin_key}"]

    def model_config(self, model: str) -> dict:
        """A served model's config as JSON ({} when there is none, or no server)."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/models/{model}/config", timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return {}

    def export_info(self) -> dict[str, str]:
        """The export facts the ensemble's config carries (empty for servers that are not ours)."""
        return export_facts(self.model_config("zero_shot"))

    def counters(self) -> list:
        """Triton's Prometheus samples now ([] without a metrics endpoint, or when it does not answer)."""
        if self.metrics_url == "none":
            return []
        try:
            return scrape(self.metrics_url)
        except (OSError, ValueError):
            return []

    def server_pid(self) -> int | None:
        """tritonserver's pid when it runs on this machine (for CPU and memory), else None."""
        host, port = self.grpc_url.rsplit(":", 1)
        if self.pid or host not in LOCAL_HOSTS:
            return self.pid
        return find_tritonserver(int(port), urllib.parse.urlsplit(self.metrics_url).port)


@contextlib.contextmanager
def serve(repository: Path, log_path: Path | None = None, response_cache: bool = False):
    """tritonserver on `repository` (free ports) for the `with` block: its Target."""
    from zsc_server.triton_process import TritonServer, free_ports

    print(f"[server] starting tritonserver on {repository}", flush=True)
    with TritonServer(repository, *free_ports(3), log_path=log_path, response_cache=response_cache) as server:
        yield Target(server.grpc_url, server.http_url, server.metrics_url, server.admin_secret, server.process.pid)


# ---------------------------------------------------------------- the local server's processes


def find_tritonserver(grpc_port: int, metrics_port: int | None = None) -> int | None:
    """The pid of the local tritonserver serving gRPC on `grpc_port`: one listening there itself
    (--grpc-port=N), the one behind the launcher's gRPC front or its edge proxy listening there, or, behind
    another proxy, the one serving its metrics on `metrics_port`."""
    import psutil

    def by_flag(flag: str) -> int | None:
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            if cmdline and cmdline[0].endswith("tritonserver") and flag in cmdline:
                return process.pid
        return None

    found = by_flag(f"--grpc-port={grpc_port}")
    if found:
        return found
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == grpc_port and connection.pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                listener = psutil.Process(connection.pid)  # the launcher, or its edge proxy (a child of it)
                servers = [child.pid for process in (listener, listener.parent()) if process
                           for child in process.children() if child.name() == "tritonserver"]
                if servers:
                    return servers[0]
    return by_flag(f"--metrics-port={metrics_port}") if metrics_port else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime (fields 14, 15 of stat)


def launcher_of(server_pid: int) -> int | None:
    """The launcher (zsc_server.serve) that runs tritonserver `server_pid`, whose fronts carry its traffic."""
    try:
        with open(f"/proc/{server_pid}/stat") as stat:
            parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{parent}/cmdline", "rb") as cmdline:
            return parent if b"zsc_server.serve" in cmdline.read().split(b"\0") else None
    except (OSError, ValueError, IndexError):
        return None


def cpu_snapshot(server_pid: int | None) -> dict[str, float] | None:
    """CPU seconds so far: {"tritonserver": ..., <model>: all its stubs together, "fronts": the launcher's
    process when the server runs behind its HTTP and gRPC fronts, "edge": its haproxy, when it runs one}; None
    without a local server."""
    import psutil

    if not server_pid:
        return None
    usage = {"tritonserver": cpu_seconds(server_pid)}
    launcher = launcher_of(server_pid)
    if launcher is not None:
        usage["fronts"] = cpu_seconds(launcher)
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(launcher).children():
                if child.name() == "haproxy":
                    usage["edge"] = usage.get("edge", 0.0) + cpu_seconds(child.pid)
    for pid, model in stub_models(server_pid).items():
        usage[model] = usage.get(model, 0.0) + cpu_seconds(pid)
    return usage


def cpu_per_request_ms(before: dict | None, after: dict | None, requests: int) -> dict[str, float] | None:
    """CPU milliseconds per request by process between two snapshots, with their "total"."""
    if before is None or after is None:
        return None
    shares = {name: (after[name] - before.get(name, 0.0)) * 1e3 / max(1, requests) for name in after}
    return shares | {"total": sum(shares.values())}


def allowed_cpus(pid: int | None) -> str:
    """The cores a process may run on, as /proc says (e.g. '0-1')."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as status:
            for line in status:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


# ---------------------------------------------------------------- samplers


class Sampler:
    """Calls `sample()` every `period_s` in a thread while the `with` block lasts (and once more at its end)."""

    def __init__(self, period_s: float, active: bool = True) -> None:
        self.period_s, self.active = period_s, active
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def __enter__(self):
        if self.active:
            self.sample()
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self.active:
            self.sample()


class NvidiaSmiSampler(Sampler):
    """GPU memory and utilization every second (no-op without nvidia-smi)."""

    def __init__(self, period_s: float = 1.0) -> None:
        super().__init__(period_s, shutil.which("nvidia-smi") is not None)
        self.samples: list[dict] = []

    def sample(self) -> None:
        self.samples.extend(query_gpus())

    def summary(self) -> dict:
        if not self.samples:
            return {}
        return {"memory_used_mb_max": max(s["memory_used_mb"] for s in self.samples),
                "memory_total_mb": self.samples[0]["memory_total_mb"],
                "utilization_avg": sum(s["utilization"] for s in self.samples) / len(self.samples)}


def query_gpus() -> list[dict]:
    gpus = []
    for row in gpus_query(("name", "memory.used", "memory.total", "utilization.gpu")):
        with contextlib.suppress(ValueError):  # "[N/A]": no figures from that GPU
            name, used, total, utilization = row
            gpus.append({"name": name, "memory_used_mb": float(used), "memory_total_mb": float(total),
                         "utilization": float(utilization)})
    return gpus


class RssSampler(Sampler):
    """The RSS of tritonserver and its descendants, summed; notes when the server goes away or its children
    change (a stub that died or was replaced)."""

    def __init__(self, pid: int | None, period_s: float) -> None:
        super().__init__(period_s, bool(pid))
        self.pid = pid
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self.events: list[str] = []
        self.server_gone = False
        self._children: set[int] | None = None

    def sample(self) -> None:
        import psutil

        at = time.monotonic() - self._started
        try:
            server = psutil.Process(self.pid)
            processes = [server, *server.children(recursive=True)]
        except psutil.NoSuchProcess:
            if not self.server_gone:
                self.events.append(f"{at:.0f} s: tritonserver (pid {self.pid}) is gone")
            self.server_gone = True
            return
        total, alive = 0, set()
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                if process.status() != psutil.STATUS_ZOMBIE:
                    total += process.memory_info().rss
                    alive.add(process.pid)
        if self._children is not None and alive != self._children:
            self.events.append(f"{at:.0f} s: child processes changed: gone {sorted(self._children - alive)}, "
                               f"new {sorted(alive - self._children)}")
        self._children = alive
        self.samples.append((at, total / 2**20))

    def summary(self) -> dict:
        import numpy as np

        if not self.samples:
            return {"sampled": False}
        times, mib = np.array([t for t, _ in self.samples]), np.array([m for _, m in self.samples])
        window = min(60.0, (times[-1] - times[0]) / 3) if len(times) > 2 else 0.0
        late = times >= times[0] + np.ptp(times) / 2

        def slope(t, m) -> float:  # least-squares MiB per minute
            return 0.0 if len(t) < 2 or np.ptp(t) == 0 else round(float(np.polyfit(t, m, 1)[0]) * 60, 3)

        return {"sampled": True, "samples": len(self.samples), "period_s": self.period_s, "window_s": round(window, 1),
                "first_window_median_mib": round(float(np.median(mib[times <= times[0] + window])), 1),
                "last_window_median_mib": round(float(np.median(mib[times >= times[-1] - window])), 1),
                "slope_mib_per_min": slope(times, mib), "slope_second_half_mib_per_min": slope(times[late], mib[late]),
                "max_mib": round(float(mib.max()), 1),
                "events": self.events, "series": [[round(t, 1), round(m, 1)] for t, m in self.samples]}
