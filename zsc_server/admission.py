"""Admission control: refuse a request before any work on it once requests wait longer than the budget.

Past capacity, a queue only grows: requests wait longer and longer, and those the encoder's bounded queue
finally turns away had already been parsed and tokenized. Instead, the preprocess asks `admit()` first
thing, before reading the request's inputs, and a refused request costs one hop and no tokenization.

The rule is CoDel's (Nichols & Jacobson, "Controlling Queue Delay", ACM Queue 2012), applied to
admission: the postprocess reports every answered request's time in the ensemble (its sojourn); when the
*shortest* sojourn over an interval (100 ms) exceeds the target, the queue is standing, not a passing
burst, and new requests are refused until an interval closes whose shortest sojourn is under target.
Requests already admitted are served; the queue drains to about the target and stays there, so the
encoder never runs dry (goodput stays near capacity) and accepted requests wait about the target. The
refusal lasts from one interval's verdict to the next, however far apart answers come (a GPU's large
batches answer in clumps); only when no answer at all has come for longer than an interval and twice the
last standing sojourn does it lapse, so that a server which refused everything cannot lock itself out.

The preprocess and postprocess instances are separate processes of one tritonserver: they share the state
through a small file in /dev/shm named after tritonserver's pid (the stubs' parent), updated under an
exclusive flock; the launcher removes it when tritonserver exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import mmap
import os
import struct
import time
from pathlib import Path

SHM = Path("/dev/shm")
PREFIX = "zsc-admission-"
# window_start_ns, window_min_us, window_answers, overloaded (0/1), standing_min_us, last_answer_ns,
# admitted, refused
_LAYOUT = struct.Struct("<qqqqqqqq")
OVERLOADED, STANDING_MIN_US, LAST_ANSWER_NS, ADMITTED, REFUSED = 3, 4, 5, 6, 7


@dataclasses.dataclass(frozen=True)
class AdmissionSettings:
    target_ms: float = 0.0  # 0: no admission control
    interval_ms: float = 100.0
    # an interval with fewer answers says nothing about a queue: one long request (512 tokens, 100 labels)
    # at low load must not refuse everyone else
    min_answers: int = 4

    @property
    def enabled(self) -> bool:
        return self.target_ms > 0

    def to_parameters(self) -> dict[str, str]:
        return {"admission_target_ms": f"{self.target_ms:g}", "admission_interval_ms": f"{self.interval_ms:g}",
                "admission_min_answers": str(self.min_answers)}

    @classmethod
    def from_model_config(cls, model_config: dict) -> AdmissionSettings:
        """From the parsed JSON model config a Python-backend model receives in ``initialize``."""
        return cls.from_parameters({k: v["string_value"] for k, v in model_config.get("parameters", {}).items()})

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> AdmissionSettings:
        default = cls()
        return cls(float(parameters.get("admission_target_ms", default.target_ms)),
                   float(parameters.get("admission_interval_ms", default.interval_ms)),
                   int(parameters.get("admission_min_answers", default.min_answers)))


def state_path(server_pid: int) -> Path:
    return SHM / f"{PREFIX}{server_pid}"


class AdmissionGate:
    def __init__(self, settings: AdmissionSettings, path: Path) -> None:
        self.settings = settings
        self.target_us = int(settings.target_ms * 1e3)
        self.interval_ns = int(settings.interval_ms * 1e6)
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with _locked(fd):
                if os.fstat(fd).st_size < _LAYOUT.size:
                    os.ftruncate(fd, _LAYOUT.size)
            self._map = mmap.mmap(fd, _LAYOUT.size)
        finally:
            os.close(fd)
        self._lock_fd = os.open(path, os.O_RDWR)

    @classmethod
    def for_server(cls, settings: AdmissionSettings) -> AdmissionGate | None:
        """The gate shared by the Python models of the tritonserver this process runs under (the stub's
        parent), or None when admission control is off."""
        return cls(settings, state_path(os.getppid())) if settings.enabled else None

    def _read(self) -> list[int]:
        return list(_LAYOUT.unpack_from(self._map, 0))

    def admit(self, now_ns: int | None = None) -> str | None:
        """None: go ahead. Otherwise the reason to refuse, for the caller's UNAVAILABLE answer."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        with _locked(self._lock_fd):
            state = self._read()
            lapse_ns = max(self.interval_ns, 2 * state[STANDING_MIN_US] * 1000)
            overloaded = bool(state[OVERLOADED]) and now_ns - state[LAST_ANSWER_NS] < lapse_ns
            state[REFUSED if overloaded else ADMITTED] += 1
            _LAYOUT.pack_into(self._map, 0, *state)
        if overloaded:
            return (f"busy: requests have waited over {self.settings.target_ms:g} ms for {self.settings.interval_ms:g} "
                    "ms (admission target); retry later")
        return None

    def answered(self, sojourn_ms: float, now_ns: int | None = None) -> None:
        """A request was answered after `sojourn_ms` in the ensemble: close the interval if it is over."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        sojourn_us = int(sojourn_ms * 1e3)
        with _locked(self._lock_fd):
            window_start, window_min, answers, overloaded, standing_min, _, admitted, refused = self._read()
            if answers == 0:  # the first answer since the server started
                window_start, window_min, answers = now_ns, sojourn_us, 1
            elif now_ns - window_start >= self.interval_ns:
                # the interval is over: refuse until the next verdict if even its best request waited too long
                standing = window_min > self.target_us and answers >= self.settings.min_answers
                overloaded, standing_min = (1, window_min) if standing else (0, 0)
                window_start, window_min, answers = now_ns, sojourn_us, 1
            else:
                window_min, answers = min(window_min, sojourn_us), answers + 1
            _LAYOUT.pack_into(self._map, 0, window_start, window_min, answers, overloaded, standing_min, now_ns,
                              admitted, refused)

    def counts(self) -> tuple[int, int]:
        """(admitted, refused) since the server started."""
        state = self._read()
        return state[ADMITTED], state[REFUSED]

    def close(self) -> None:
        self._map.close()
        os.close(self._lock_fd)


@contextlib.contextmanager
def _locked(fd: int):
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def remove_state(server_pid: int) -> None:
    """What the launcher does once tritonserver has exited."""
    with contextlib.suppress(FileNotFoundError):
        state_path(server_pid).unlink()
