"""CPU time a local tritonserver spends, by process, read from /proc: tritonserver itself (gRPC and HTTP,
ensemble scheduling, the dynamic batcher) and each model's Python-backend stubs (preprocess, encoder,
postprocess).

CPU seconds per request is what caps requests/s once the cores are busy, and unlike wall-clock latency it
barely moves when other programs share the machine: the benchmark reports it beside its timings.
"""

from __future__ import annotations

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
    """The pid of the local tritonserver serving gRPC on `grpc_port`, from its command line."""
    wanted = f"--grpc-port={grpc_port}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                args = cmdline.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"tritonserver") and wanted in args:
            return int(entry.name)
    return None


def snapshot(server_pid: int) -> dict[str, float]:
    """CPU seconds so far: {"tritonserver": ..., <model>: all its stubs together}."""
    usage = {"tritonserver": cpu_seconds(server_pid)}
    for pid, model in stub_models(server_pid).items():
        usage[model] = usage.get(model, 0.0) + cpu_seconds(pid)
    return usage


def per_request_ms(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request by process between two snapshots, with their "total"."""
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    shares = {name: seconds * 1e3 / max(1, requests) for name, seconds in spent.items()}
    return shares | {"total": sum(shares.values())}
