"""argparse types the launcher's and the load tests' command lines share: a bad value is refused as argparse
refuses any, naming its flag, exit code 2, before any work starts. (Export checks its numbers in
export.options.ExportOptions, which library callers use too.)"""

from __future__ import annotations

import argparse
import math
import os


def _number(text: str, accept, what: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
    return value


def positive(text: str) -> float:
    """A number above 0 (a duration, a rate, a timeout)."""
    return _number(text, lambda value: value > 0, "above 0")


def non_negative(text: str) -> float:
    """0 or more (0 usually skips the step)."""
    return _number(text, lambda value: value >= 0, "0 or more")


def positive_int(text: str) -> int:
    return _number(text, lambda value: value > 0, "at least 1", int)


def tcp_port(text: str) -> int:
    """A TCP port; 0 lets the system choose one."""
    return _number(text, lambda value: 0 <= value <= 65535, "a port number, 0-65535", int)


def cpu_list(spec: str) -> set[int]:
    """'1' / '0,2' / '2-3' -> core numbers (ValueError when it names none)."""
    cores = set()
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        cores.update(range(int(low), int(high or low) + 1))
    if not cores or min(cores) < 0:
        raise ValueError(f"{spec!r} names no cores")
    return cores


def cores(text: str) -> set[int]:
    """A core list as taskset writes it ('0', '0,2', '2-3') as core numbers, checked against the cores this
    process may use; '' (the flags' default): none named, so all of them."""
    if not text.strip():
        return set()
    try:
        wanted = cpu_list(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of cores such as 0, 0,2 or 2-3") from None
    usable = os.sched_getaffinity(0)
    if wanted - usable:
        raise argparse.ArgumentTypeError(f"core {min(wanted - usable)} is not one this process may use "
                                         f"({sorted(usable)})")
    return wanted
