"""Admission control: refuse a request before any work on it once requests wait longer than the budget.

Past capacity, a queue only grows: requests wait longer and longer, and those the encoder's bounded queue
finally turns away had already been parsed and tokenized. Instead, the preprocess asks `admit()` first
thing, before reading the request's inputs, and a refused request costs one hop and no tokenization.

The rule is CoDel's (Nichols & Jacobson, "Controlling Queue Delay", ACM Queue 2012), applied to
admission: the postprocess reports every answered request's time in the ensemble (its sojourn); when the
*shortest* sojourn over an interval (100 ms, or 10 service times for a slow model) exceeds the target, the
queue is standing, not a passing burst, and new requests are refused until an interval closes whose
shortest sojourn is under target.
Requests already admitted are served; the queue drains to about the target and stays there, so the
encoder never runs dry (goodput stays near capacity) and accepted requests wait about the target. The
refusal lasts from one interval's verdict to the next, however far apart answers come (a GPU's large
batches answer in clumps); only when no answer at all has come for longer than an interval and twice the
last standing sojourn does it lapse, so that a server which refused everything cannot lock itself out.

The target is, unless set, 3x the service time, measured as the quickest answer of the last 30-60 s (one
that did not queue): a fixed number cannot fit both a GPU answering in 5 ms and a CPU model answering in
300 ms, and the accepted requests' latency is meant to stay within a few unloaded latencies.

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
# admitted, refused, service_window_start_ns, service_best_us, service_previous_us
_LAYOUT = struct.Struct("<qqqqqqqqqqq")
OVERLOADED, STANDING_MIN_US, LAST_ANSWER_NS, ADMITTED, REFUSED = 3, 4, 5, 6, 7
SERVICE_WINDOW_NS = 30 * 10**9  # the service time is the quickest answer of the last 30 to 60 s
AUTO_FLOOR_US = 5_000  # an automatic target never goes below 5 ms (timer and scheduling noise)


@dataclasses.dataclass(frozen=True)
class AdmissionSettings:
    enabled: bool = True
    # None (auto): `factor` x the service time the gate measures (the quickest answer of the last 30-60 s,
    # i.e. an answer that did not queue); a number: a fixed target in ms
    target_ms: float | None = None
    factor: float = 3.0
    # the shortest interval; with an automatic target, 10 service times when that is longer (a slow model
    # answers few requests per 100 ms)
    interval_ms: float = 100.0
    # an interval with fewer answers says nothing about a queue: one long request (512 tokens, 100 labels)
    # at low load must not refuse everyone else
    min_answers: int = 4

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        target = f"{self.target_ms:g} ms" if self.target_ms else f"{self.factor:g} x the measured service time"
        return f"target {target}, interval >= {self.interval_ms:g} ms"

    def to_parameters(self) -> dict[str, str]:
        target = "off" if not self.enabled else "auto" if self.target_ms is None else f"{self.target_ms:g}"
        return {"admission_target_ms": target, "admission_factor": f"{self.factor:g}",
                "admission_interval_ms": f"{self.interval_ms:g}", "admission_min_answers": str(self.min_answers)}

    @classmethod
    def parse_target(cls, text: str) -> tuple[bool, float | None]:
        """'auto' / 'off' / '0' / a number of ms -> (enabled, target_ms)."""
        text = text.strip().lower()
        if text == "auto":
            return True, None
        if text in ("off", "0", "0.0"):
            return False, None
        value = float(text)
        if value < 0:
            raise ValueError(f"an admission target is auto, off or a positive number of ms, got {text!r}")
        return True, value

    @classmethod
    def from_model_config(cls, model_config: dict) -> AdmissionSettings:
        """From the parsed JSON model config a Python-backend model receives in ``initialize``."""
        return cls.from_parameters({k: v["string_value"] for k, v in model_config.get("parameters", {}).items()})

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> AdmissionSettings:
        if "admission_target_ms" not in parameters:
            return cls(enabled=False)  # a repository exported before admission control
        enabled, target = cls.parse_target(parameters["admission_target_ms"])
        default = cls()
        return cls(enabled, target, float(parameters.get("admission_factor", default.factor)),
                   float(parameters.get("admission_interval_ms", default.interval_ms)),
                   int(parameters.get("admission_min_answers", default.min_answers)))


def state_path(server_pid: int) -> Path:
    return SHM / f"{PREFIX}{server_pid}"


class AdmissionGate:
    def __init__(self, settings: AdmissionSettings, path: Path) -> None:
        self.settings = settings
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

    def _target_and_interval_us(self, state: list[int]) -> tuple[int | None, int]:
        """The target and interval in µs; no target while the service time is not known yet."""
        interval_us = int(self.settings.interval_ms * 1e3)
        if self.settings.target_ms is not None:
            return int(self.settings.target_ms * 1e3), interval_us
        known = [us for us in state[9:11] if us > 0]
        if not known:
            return None, interval_us
        service_us = min(known)
        return max(AUTO_FLOOR_US, int(self.settings.factor * service_us)), max(interval_us, 10 * service_us)

    def admit_or_hold(self, hold_s: float, poll_s: float = 0.002) -> str | None:
        """`admit()`, but while the queue stands wait for room up to `hold_s` (the target), checking every
        `poll_s`: the caller's instance is held, so new requests wait in Triton's own bounded queue in front of
        it, which turns the excess away at once in C++, with no round trip to a Python model; a refusal here
        costs one. The reason to refuse once the hold is over without room, else None."""
        deadline = time.monotonic() + hold_s
        while self.admit(count=False) and time.monotonic() < deadline:
            time.sleep(poll_s)
        return self.admit()

    def hold_s(self) -> float:
        """How long `admit_or_hold` may hold a request: the current target (0 until it is known)."""
        target_us, _ = self._target_and_interval_us(self._read())
        return (target_us or 0) / 1e6

    def admit(self, now_ns: int | None = None, count: bool = True) -> str | None:
        """None: go ahead. Otherwise the reason to refuse, for the caller's UNAVAILABLE answer. `count`: record
        the decision in the admitted / refused counters."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        with _locked(self._lock_fd):
            state = self._read()
            target_us, interval_us = self._target_and_interval_us(state)
            lapse_ns = max(interval_us, 2 * state[STANDING_MIN_US]) * 1000
            overloaded = bool(state[OVERLOADED]) and now_ns - state[LAST_ANSWER_NS] < lapse_ns
            if count:
                state[REFUSED if overloaded else ADMITTED] += 1
                _LAYOUT.pack_into(self._map, 0, *state)
        if overloaded:
            return (f"busy: requests have waited over {target_us / 1e3:.0f} ms (admission target"
                    f"{'' if self.settings.target_ms else ', 3x the quickest recent answer'}); retry later")
        return None

    def answered(self, sojourn_ms: float, now_ns: int | None = None) -> None:
        """A request was answered after `sojourn_ms` in the ensemble: close the interval if it is over."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        sojourn_us = int(sojourn_ms * 1e3)
        with _locked(self._lock_fd):
            state = self._read()
            window_start, window_min, answers, overloaded, standing_min = state[:5]
            service_start, service_best, service_previous = state[8:11]
            if service_best == 0 or now_ns - service_start >= SERVICE_WINDOW_NS:
                service_start, service_previous, service_best = now_ns, service_best, sojourn_us
            else:
                service_best = min(service_best, sojourn_us)
            state[8:11] = [service_start, service_best, service_previous]
            target_us, interval_us = self._target_and_interval_us(state)
            if answers == 0:  # the first answer since the server started
                window_start, window_min, answers = now_ns, sojourn_us, 1
            elif now_ns - window_start >= interval_us * 1000:
                # the interval is over: refuse until the next verdict if even its best request waited too long
                standing = (target_us is not None and window_min > target_us
                            and answers >= self.settings.min_answers)
                overloaded, standing_min = (1, window_min) if standing else (0, 0)
                window_start, window_min, answers = now_ns, sojourn_us, 1
            else:
                window_min, answers = min(window_min, sojourn_us), answers + 1
            state[:6] = [window_start, window_min, answers, overloaded, standing_min, now_ns]
            _LAYOUT.pack_into(self._map, 0, *state)

    def counts(self) -> tuple[int, int]:
        """(admitted, refused) since the server started."""
        state = self._read()
        return state[ADMITTED], state[REFUSED]

    def service_ms(self) -> float | None:
        """The service time the automatic target is made from (None until the first answer)."""
        known = [us for us in self._read()[9:11] if us > 0]
        return min(known) / 1e3 if known else None

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
