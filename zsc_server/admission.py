"""Admission control: refuse a request, before tokenizing it, when the wait it would see exceeds the latency budget.

Past capacity a queue only grows, and a request that waits several seconds helps nobody: its caller would
rather hear "busy" at once and retry elsewhere. So the preprocess estimates, for each valid request and
before any tokenization, how long the encoder needs for the work admitted and not yet done, and refuses the
request (UNAVAILABLE; HTTP 503) when that wait is over the budget. Admitted requests are served; the work
waiting for the encoder (the execution in flight included) stays within the budget, so an accepted answer
takes about the budget at worst, and the encoder never runs dry.

The estimate is a ledger of encoder rows: the preprocess books each admitted request's rows (and the label
cache's misses), the Python encoders strike off the rows of every execution, oldest first, and the wait is
the rows left x the encoder's time per row / its instances. Rows that never reach the encoder (a request
refused by the encoder's queue, or failed on the way) are forgotten once older than the encoder queue's
budget plus this one: nothing has to be handed back for the ledger to stay true. The ledger is kept in
time buckets (BUCKET_MS). An estimate from admissions alone (a virtual clock) drifts: with batches, an
error made once (the export's time per row against the served one under contention) is never corrected.

The time per row starts from the export's measurement on a sample request and follows what the Python
encoders measure in every execution (rows and seconds, weighted by rows with older executions decaying),
so it follows the real batch sizes, sequence lengths and CPU contention of the moment.

The launcher's fronts ask the same ledger before forwarding, and bound what the ledger cannot see yet: the
requests they forwarded that have not come back, some of them still queued in front of the preprocess (many,
when tritonserver runs below the fronts' CPU priority). They keep about a budget's worth of answers in flight:
no more than they answered correctly in the last second, scaled to the budget (batching_policy).

The preprocess instances and the encoder instances are separate processes of one tritonserver: they share
the state through a small file in /dev/shm named after tritonserver's pid (the stubs' parent), updated under
an exclusive flock; the launcher removes it when tritonserver exits.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import mmap
import os
import re
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from zsc_server.batching_policy import ADMISSION_ANSWER_WINDOW_S, ADMISSION_CLOSED_LOOP_REQUESTS
from zsc_server.front_thread import Admission

SHM = Path("/dev/shm")
PREFIX = "zsc-admission-"
BUCKET_MS = 100  # the ledger's granularity
# header: the decayed sums of execution time (ns) and rows, admitted, refused; then per bucket (epoch, rows)
_HEADER = struct.Struct("<ddqq")
TIME_SUM, ROWS_SUM, ADMITTED, REFUSED = range(4)
# The export's measured time per row counts as this many rows of evidence until executions outweigh it.
PRIOR_ROWS = 64.0
# Each execution's weight relative to the one before: the estimate follows the last ~10 executions.
DECAY = 0.9


@dataclasses.dataclass(frozen=True)
class AdmissionSettings:
    budget_ms: float | None = None  # the longest estimated wait a request is admitted to; None: off
    row_ms: float = 1.0  # the encoder's time per row (pair or sentence) per instance, measured at export
    encoder_instances: int = 1
    # booked rows not struck off by then never reached the encoder: the encoder queue's budget plus this one
    forget_ms: float = 10_000.0
    hold_ms: float = 0.0  # how long the preprocess may hold a request over the budget, waiting for room

    @property
    def enabled(self) -> bool:
        return self.budget_ms is not None

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        return (f"refuse when the estimated wait for the encoder exceeds {self.budget_ms:g} ms "
                f"(starting from {self.row_ms:.3g} ms per row, {self.encoder_instances} encoder instance(s))")

    def to_parameters(self) -> dict[str, str]:
        return {"admission_budget_ms": "off" if self.budget_ms is None else f"{self.budget_ms:g}",
                "admission_row_ms": f"{self.row_ms:.6g}", "admission_encoder_instances": str(self.encoder_instances),
                "admission_forget_ms": f"{self.forget_ms:g}", "admission_hold_ms": f"{self.hold_ms:g}"}

    @classmethod
    def from_model_config(cls, model_config: dict) -> AdmissionSettings:
        """From the parsed JSON model config a Python-backend model receives in ``initialize``."""
        return cls.from_parameters({k: v["string_value"] for k, v in model_config.get("parameters", {}).items()})

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> AdmissionSettings:
        budget = parameters.get("admission_budget_ms", "off")  # absent: exported before admission control
        if budget == "off":
            return cls()
        return cls(float(budget), float(parameters.get("admission_row_ms", cls.row_ms)),
                   int(parameters.get("admission_encoder_instances", cls.encoder_instances)),
                   float(parameters.get("admission_forget_ms", cls.forget_ms)),
                   float(parameters.get("admission_hold_ms", cls.hold_ms)))


def parse_budget(text: str) -> float | str | None:
    """--admission-budget-ms: 'auto' (decided at export from the encoder's measured time), 'off' or '0' (None),
    or a positive number of ms."""
    text = str(text).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("off", "0", "0.0"):
        return None
    value = float(text)  # ValueError names the text
    if value < 0:
        raise ValueError(f"an admission budget is auto, off or a positive number of ms, got {text!r}")
    return value


def state_path(server_pid: int) -> Path:
    return SHM / f"{PREFIX}{server_pid}"


class AdmissionGate:
    def __init__(self, settings: AdmissionSettings, path: Path) -> None:
        self.settings = settings
        self.path = path
        self._keep = max(1, int(settings.forget_ms // BUCKET_MS) + 1)  # buckets a booked row stays in the ledger
        size = _HEADER.size + 16 * self._keep
        self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        with _locked(self._lock_fd):
            fresh = os.fstat(self._lock_fd).st_size < size
            if fresh:
                os.ftruncate(self._lock_fd, size)
            self._map = mmap.mmap(self._lock_fd, size)
            if fresh:
                _HEADER.pack_into(self._map, 0, settings.row_ms * 1e6 * PRIOR_ROWS, PRIOR_ROWS, 0, 0)
        self._epochs = np.frombuffer(self._map, np.int64, self._keep, _HEADER.size + 8 * self._keep)
        self._rows = np.frombuffer(self._map, np.float64, self._keep, _HEADER.size)

    @classmethod
    def for_server(cls, settings: AdmissionSettings) -> AdmissionGate | None:
        """The gate shared by the Python models of the tritonserver this process runs under (the stub's
        parent), or None when admission control is off."""
        return cls(settings, state_path(os.getppid())) if settings.enabled else None

    def _live(self, epoch: int) -> np.ndarray:
        """Which buckets hold rows booked within the last forget_ms (the others are forgotten)."""
        return (self._epochs > epoch - self._keep) & (self._epochs <= epoch)

    def _wait_ms(self, live: np.ndarray) -> float:
        time_sum, rows_sum = _HEADER.unpack_from(self._map, 0)[:2]
        return float(self._rows[live].sum()) * time_sum / rows_sum / 1e6 / max(1, self.settings.encoder_instances)

    def _book(self, epoch: int, rows: int) -> None:
        slot = epoch % self._keep
        if self._epochs[slot] != epoch:
            self._epochs[slot], self._rows[slot] = epoch, 0.0
        self._rows[slot] += rows

    def _count(self, field: int) -> None:
        header = list(_HEADER.unpack_from(self._map, 0))
        header[field] += 1
        _HEADER.pack_into(self._map, 0, *header)

    def admit(self, rows: int, hold_s: float | None = None, poll_s: float = 0.002,
              now_ns: int | None = None) -> str | None:
        """None: go ahead, and the request's rows are booked. While the wait is over the budget, hold the request
        up to `hold_s` (None: the settings' hold_ms), looking every `poll_s` for room (an execution that ends
        strikes its rows off): the caller's instance is held meanwhile, so the requests behind it fill Triton's
        bounded queue in front of the preprocess, which turns the excess away at once, in C++, with no round
        trip to a Python model.
        Still over the budget then: the reason to refuse, for the caller's UNAVAILABLE answer."""
        deadline = time.monotonic() + (self.settings.hold_ms / 1e3 if hold_s is None else hold_s)
        while True:
            epoch = _epoch(now_ns)
            with _locked(self._lock_fd):
                wait_ms = self._wait_ms(self._live(epoch))
                room = wait_ms <= self.settings.budget_ms
                if room:
                    self._book(epoch, rows)
                if room or time.monotonic() >= deadline:
                    self._count(ADMITTED if room else REFUSED)
                    break
            time.sleep(poll_s)
        return None if room else self.refusal_text(wait_ms)

    def over_budget(self, now_ns: int | None = None) -> str | None:
        """The reason to refuse a request now, without booking it (the fronts' check), else None."""
        wait_ms = self.wait_ms(now_ns)
        return self.refusal_text(wait_ms) if wait_ms > self.settings.budget_ms else None

    def refusal_text(self, wait_ms: float) -> str:
        return (f"busy: requests would wait about {wait_ms:.0f} ms for the encoder, over the latency "
                f"budget of {self.settings.budget_ms:g} ms (admission control); retry later")

    def charge(self, rows: int, now_ns: int | None = None) -> None:
        """Book encoder work found after admission (the label cache's misses), without a decision."""
        epoch = _epoch(now_ns)
        with _locked(self._lock_fd):
            self._book(epoch, rows)

    def executed(self, rows: int, seconds: float, now_ns: int | None = None) -> None:
        """An encoder instance ran `rows` rows in `seconds`: strike them off, oldest first; the time per row
        follows them."""
        if rows <= 0:
            return
        epoch = _epoch(now_ns)
        with _locked(self._lock_fd):
            time_sum, rows_sum, admitted, refused = _HEADER.unpack_from(self._map, 0)
            _HEADER.pack_into(self._map, 0, time_sum * DECAY + seconds * 1e9, rows_sum * DECAY + rows,
                              admitted, refused)
            live = np.flatnonzero(self._live(epoch))
            oldest_first = live[np.argsort(self._epochs[live], kind="stable")]
            booked = self._rows[oldest_first]
            # what is left in each bucket once `rows` are taken from the oldest on
            left = np.clip(np.cumsum(booked) - rows, 0.0, booked)
            self._rows[oldest_first] = left

    def row_ms(self) -> float:
        """The current estimate of one instance's time per encoder row."""
        time_sum, rows_sum = _HEADER.unpack_from(self._map, 0)[:2]
        return time_sum / rows_sum / 1e6

    def wait_ms(self, now_ns: int | None = None) -> float:
        """The wait a request admitted now would see (0 when the encoder has nothing booked)."""
        with _locked(self._lock_fd):
            return self._wait_ms(self._live(_epoch(now_ns)))

    def counts(self) -> tuple[int, int]:
        """(admitted, refused) since the server started."""
        return tuple(_HEADER.unpack_from(self._map, 0)[2:])

    def close(self) -> None:
        del self._epochs, self._rows  # the buffer views must go before the map can close
        self._map.close()
        os.close(self._lock_fd)


def _epoch(now_ns: int | None) -> int:
    return (time.monotonic_ns() if now_ns is None else now_ns) // (BUCKET_MS * 1_000_000)


class FrontGate(Admission):
    """Admission control at the launcher's fronts: an inference request is refused there, before tritonserver
    parses it, schedules the ensemble and hands it to a Python model, while the estimated wait is over the
    budget. A refusal then costs the front's own work alone; measured on one core at twice MiniLM's
    capacity, refusals that went on to tritonserver took CPU the encoder needed. The preprocess still decides
    and books each request that reaches it: this check books nothing.

    One gate serves every front, and counts the requests they forwarded and have not answered yet: more than
    the server answers correctly in the budget (never fewer than ADMISSION_CLOSED_LOOP_REQUESTS) would wait
    longer than the budget, wherever they are, the ledger's view or not."""

    def __init__(self, settings: AdmissionSettings, answer_window_s: float = ADMISSION_ANSWER_WINDOW_S,
                 min_in_flight: int = ADMISSION_CLOSED_LOOP_REQUESTS) -> None:
        self.settings = settings
        self.answer_window_s, self.min_in_flight = answer_window_s, min_in_flight
        self._gate: AdmissionGate | None = None
        self._in_flight = 0
        self._answered: collections.deque[float] = collections.deque()  # when each recent correct answer came
        self._lock = threading.Lock()  # the fronts run in threads of their own

    @classmethod
    def for_repository(cls, repository: Path) -> FrontGate | None:
        """From the preprocess config's admission parameters; None when admission control is off."""
        try:
            text = (Path(repository) / "preprocess" / "config.pbtxt").read_text(encoding="utf-8")
        except OSError:
            return None
        parameters = dict(re.findall(r'key:\s*"(admission_\w+)"\s*value\s*\{\s*string_value:\s*"([^"]*)"', text))
        settings = AdmissionSettings.from_parameters(parameters)
        return cls(settings) if settings.enabled else None

    def follow(self, server_pid: int) -> None:
        """The state of the tritonserver now serving (a new one after a restart). The previous gate is left to
        the garbage collector: a front thread may be reading it."""
        self._gate = AdmissionGate(self.settings, state_path(server_pid))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def answers_per_s(self, now: float | None = None) -> float:
        """The correct answers per second over the last answer window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._answered and self._answered[0] < now - self.answer_window_s:
                self._answered.popleft()
            return len(self._answered) / self.answer_window_s

    def max_in_flight(self, now: float | None = None) -> float:
        """The requests that may be in flight: the correct answers of the last answer window, scaled to the
        budget, and never fewer than min_in_flight."""
        return max(float(self.min_in_flight), self.answers_per_s(now) * self.settings.budget_ms / 1e3)

    def refusal(self) -> str | None:
        """Why to refuse an inference request now, or None to forward it."""
        gate = self._gate
        if gate is None:
            return None
        in_flight, limit = self._in_flight, self.max_in_flight()
        if in_flight >= limit:  # Little's law: limit in flight wait about the budget
            return gate.refusal_text(self.settings.budget_ms * (in_flight + 1) / limit)
        return gate.over_budget()

    @contextlib.contextmanager
    def forwarding(self) -> Iterator[str | None]:
        reason = self.refusal()
        if reason:
            yield reason
            return
        with self._lock:
            self._in_flight += 1
        try:
            yield None
        finally:
            with self._lock:
                self._in_flight -= 1

    def answered(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._answered.append(now)


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
