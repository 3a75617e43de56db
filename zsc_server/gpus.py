"""The NVIDIA GPUs this host can see, as ``nvidia-smi`` lists them (stdlib only: the launcher uses it).

No nvidia-smi, a driver that does not answer, or no GPU: an empty list. Export picks a GPU profile from
it (``--gpu auto``) and the launcher warns when it serves a CPU-exported encoder beside visible GPUs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess


@dataclasses.dataclass(frozen=True)
class VisibleGpu:
    name: str  # as the driver names it, e.g. "NVIDIA H100 80GB HBM3", "Tesla T4"
    memory_mib: int


def query(fields: tuple[str, ...], timeout_s: float = 10.0) -> list[list[str]]:
    """`nvidia-smi --query-gpu=FIELDS`, one row of strings per GPU; [] without nvidia-smi or a driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    command = ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):  # a wedged driver must not hang an export, a start or a load test
        return []
    if result.returncode != 0:  # e.g. "NVIDIA-SMI has failed because it couldn't communicate with the driver"
        return []
    # the first field (callers put the name there) may hold a comma, the others do not: split from the right
    return [[part.strip() for part in line.rsplit(",", len(fields) - 1)] for line in result.stdout.strip().splitlines()]


def visible_gpus(timeout_s: float = 10.0) -> list[VisibleGpu]:
    gpus = []
    for row in query(("name", "memory.total"), timeout_s):
        with contextlib.suppress(ValueError):  # "[N/A]" or a line that is not a GPU
            name, memory = row
            gpus.append(VisibleGpu(name, int(float(memory))))
    return gpus


def describe(gpus: list[VisibleGpu]) -> str:
    names = sorted({gpu.name for gpu in gpus})
    return f"{len(gpus)} GPU(s): {', '.join(names)}"
