"""The NVIDIA GPUs this host can see, as ``nvidia-smi`` lists them (stdlib only: the launcher uses it).

No nvidia-smi, a driver that does not answer, or no GPU: an empty list. Export picks a GPU profile from
it (``--gpu auto``) and the launcher warns when it serves a CPU-exported encoder beside visible GPUs.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess

QUERY = ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]


@dataclasses.dataclass(frozen=True)
class VisibleGpu:
    name: str  # as the driver names it, e.g. "NVIDIA H100 80GB HBM3", "Tesla T4"
    memory_mib: int


def visible_gpus(timeout_s: float = 10.0) -> list[VisibleGpu]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(QUERY, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):  # a wedged driver must not hang an export or a start
        return []
    if result.returncode != 0:  # e.g. "NVIDIA-SMI has failed because it couldn't communicate with the driver"
        return []
    gpus = []
    for line in result.stdout.strip().splitlines():
        name, _, memory = line.rpartition(",")
        try:
            gpus.append(VisibleGpu(name.strip(), int(float(memory.strip()))))
        except ValueError:  # "[N/A]" or a line that is not a GPU
            continue
    return gpus


def describe(gpus: list[VisibleGpu]) -> str:
    names = sorted({gpu.name for gpu in gpus})
    return f"{len(gpus)} GPU(s): {', '.join(names)}"
