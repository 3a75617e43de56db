"""CPU time a local tritonserver spends, by process, read from /proc: tritonserver itself (gRPC and HTTP,
ensemble scheduling, the dynamic batcher), each model's Python-backend stubs (preprocess, encoder,
postprocess) and, behind `make serve`'s launcher, the launcher's fronts.

CPU seconds per request is what caps requests/s once the cores are busy, and unlike wall-clock latency it
barely moves when other programs share the machine: the benchmark reports it beside its timings.
"""

from __future__ import annotations

import contextlib
import os

from zsc_server.revive import stub_models

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime (fields 14, 15 of stat)


def find_tritonserver(grpc_port: int) -> int | None:
    """The pid of the local tritonserver serving gRPC on `grpc_port`: one listening there itself
    (--grpc-port=N), or the one behind the launcher's gRPC front listening there."""
    import psutil

    wanted = f"--grpc-port={grpc_port}"
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].endswith("tritonserver") and wanted in cmdline:
            return process.pid
    for connection in psutil.net_connections("tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == grpc_port and connection.pid:
            with contextlib.suppress(psutil.NoSuchProcess):
                servers = [child.pid for child in psutil.Process(connection.pid).children()
                           if child.name() == "tritonserver"]
                return servers[0] if servers else None
    return None


def launcher_of(server_pid: int) -> int | None:
    """The launcher (zsc_server.serve) that runs tritonserver `server_pid`, whose fronts carry its traffic."""
    try:
        with open(f"/proc/{server_pid}/stat") as stat:
            parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{parent}/cmdline", "rb") as cmdline:
            return parent if b"zsc_server.serve" in cmdline.read().split(b"\0") else None
    except (OSError, ValueError, IndexError):
        return None


def snapshot(server_pid: int) -> dict[str, float]:
    """CPU seconds so far: {"tritonserver": ..., <model>: all its stubs together, "fronts": the launcher's
    process when the server runs behind its HTTP and gRPC fronts}."""
    usage = {"tritonserver": cpu_seconds(server_pid)}
    launcher = launcher_of(server_pid)
    if launcher is not None:
        usage["fronts"] = cpu_seconds(launcher)
    for pid, model in stub_models(server_pid).items():
        usage[model] = usage.get(model, 0.0) + cpu_seconds(pid)
    return usage


def per_request_ms(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request by process between two snapshots, with their "total"."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    shares = {name: seconds * 1e3 / max(1, requests) for name, seconds in spent.items()}
    return shares | {"total": sum(shares.values())}
