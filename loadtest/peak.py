"""How far a measured rate is from what the CPU can do: its INT8 multiply-accumulates per second (the widest
INT8 instruction its /proc/cpuinfo flags name, times its clock and the cores this process may use), against the
encoder's multiply-accumulates per (text, hypothesis) pair, from the served model's shape."""

from __future__ import annotations

import os
import re
from pathlib import Path

# INT8 multiply-accumulates per cycle and core, per instruction set: AMX's tile multiply (16 x 16 x 64 per
# instruction, one per 16 cycles), AVX-512 VNNI's VPDPBUSD on two ports (64 each), AVX-VNNI's on 256 bits, and
# AVX2's multiply-add pairs (no VNNI: an upper bound)
INT8_MACS_PER_CYCLE = (("amx_int8", "AMX-INT8", 1024), ("avx512_vnni", "AVX-512 VNNI", 128),
                       ("avx_vnni", "AVX-VNNI", 64), ("avx2", "AVX2", 32))


def cpu_int8_peak(cpuinfo: str | None = None, cores: int | None = None) -> dict | None:
    """{"instruction", "macs_per_cycle_per_core", "cores", "ghz", "tmacs"} for this CPU (None: unknown)."""
    try:
        text = cpuinfo if cpuinfo is not None else Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set((re.search(r"^flags\s*:\s*(.*)$", text, re.M) or [None, ""])[1].split())
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)
    found = next(((name, macs) for flag, name, macs in INT8_MACS_PER_CYCLE if flag in flags), None)
    if not found or not mhz:
        return None
    cores = cores or len(os.sched_getaffinity(0))
    ghz = float(mhz[1]) / 1e3
    return {"instruction": found[0], "macs_per_cycle_per_core": found[1], "cores": cores, "ghz": round(ghz, 3),
            "tmacs": found[1] * cores * ghz / 1e3}


def macs_per_pair(shape: dict, tokens: int) -> float:
    """A BERT-style encoder's multiply-accumulates for one sequence of `tokens`: per layer and token, the four
    attention projections, the feed-forward pair, and the attention products over the sequence."""
    hidden, intermediate = shape["hidden"], shape["intermediate"]
    return shape["layers"] * tokens * (4 * hidden * hidden + 2 * hidden * intermediate + 2 * tokens * hidden)


def against_peak(pairs_per_s: float, shape: dict, tokens: int, peak: dict) -> str:
    """One sentence: the rate as multiply-accumulates per second, and its share of the CPU's INT8 peak."""
    gmacs = pairs_per_s * macs_per_pair(shape, tokens) / 1e9
    return (f"at {tokens} tokens a pair is {macs_per_pair(shape, tokens) / 1e9:.2f} GMAC: {gmacs:,.0f} GMAC/s, "
            f"{gmacs / 1e3 / peak['tmacs']:.1%} of this CPU's INT8 peak ({peak['instruction']}: "
            f"{peak['macs_per_cycle_per_core']} MACs/cycle × {peak['cores']} cores × {peak['ghz']:.2f} GHz = "
            f"{peak['tmacs']:.2f} TMAC/s)")
