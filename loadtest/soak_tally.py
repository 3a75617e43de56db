"""The soak's bookkeeping (loadtest/soak.py): every request in exactly one bucket, refusals by kind, and the RSS
of the server's processes over the run."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import psutil

from zsc_client import ServerUnavailableError, ZeroShotClientError
from zsc_server.triton_errors import refusal_kind

BUCKET_S = 10.0  # timeline resolution

# ---------------------------------------------------------------- outcomes


def rejection_kind(error: ZeroShotClientError) -> str | None:
    """The kind of overload refusal `error` is, or None when it is not one."""
    message = error.message.lower()
    refused = refusal_kind(message)
    if refused:
        return refused
    if error.status == "StatusCode.DEADLINE_EXCEEDED" or "deadline exceeded" in message:
        return "client timeout"
    if isinstance(error, ServerUnavailableError):
        return f"unavailable: {short(error.message)}"
    return None


def short(message: str) -> str:
    """An error message as a counting key: ids and numbers blanked, the ensemble prefix dropped, cut short."""
    message = re.sub(r"^in ensemble '[^']*', ", "", message)
    message = re.sub(r"\[request id: [^\]]*\] ", "", message)
    return re.sub(r"\d+", "N", message)[:100]


class Tally:
    """Every request's bucket, latencies of correct answers, and a timeline in BUCKET_S steps."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.sent = self.correct = self.mismatched = self.lost = 0
        self.rejected: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.latencies_ms: list[float] = []
        self.examples: list[str] = []  # a few mismatches and failures, for the report
        self.timeline: dict[int, dict] = {}
        self.per_second: dict[int, list[float]] = {}  # send second -> latencies of its correct answers

    def _bucket(self, at: float) -> dict:
        index = int((at - self.started) // BUCKET_S)
        return self.timeline.setdefault(index, {"sent": 0, "correct": 0, "rejected": 0, "other": 0,
                                                "latencies_ms": []})

    def on_sent(self, at: float) -> None:
        self.sent += 1
        self._bucket(at)["sent"] += 1

    def on_answer(self, at: float, latency_ms: float, problem: str | None) -> None:
        bucket = self._bucket(at)
        if problem:
            self.mismatched += 1
            bucket["other"] += 1
            self._example(f"mismatched: {problem}")
        else:
            self.correct += 1
            self.latencies_ms.append(latency_ms)
            self.per_second.setdefault(int(at - self.started), []).append(latency_ms)
            bucket["correct"] += 1
            bucket["latencies_ms"].append(latency_ms)

    def on_error(self, at: float, error: BaseException) -> None:
        kind = rejection_kind(error) if isinstance(error, ZeroShotClientError) else None
        if kind:
            self.rejected[kind] = self.rejected.get(kind, 0) + 1
            self._bucket(at)["rejected"] += 1
            return
        key = short(error.message) if isinstance(error, ZeroShotClientError) else f"{type(error).__name__}: {error}"
        self.failed[key] = self.failed.get(key, 0) + 1
        self._bucket(at)["other"] += 1
        self._example(f"failed: {key}")

    def _example(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)

    def summary(self) -> dict:
        answered = sorted(self.latencies_ms)

        def percentile(q: float) -> float | None:
            return round(float(np.percentile(answered, q)), 2) if answered else None

        timeline = []
        for index in sorted(self.timeline):
            bucket = self.timeline[index]
            timeline.append({"t_s": index * BUCKET_S, "sent": bucket["sent"], "correct": bucket["correct"],
                             "rejected": bucket["rejected"], "other": bucket["other"],
                             "p50_ms": round(float(np.median(bucket["latencies_ms"])), 2)
                             if bucket["latencies_ms"] else None})
        return {"sent": self.sent, "correct": self.correct, "rejected": sum(self.rejected.values()),
                "rejected_by_kind": dict(sorted(self.rejected.items(), key=lambda kv: -kv[1])),
                "failed": sum(self.failed.values()),
                "failed_by_message": dict(sorted(self.failed.items(), key=lambda kv: -kv[1])),
                "mismatched": self.mismatched, "lost": self.lost, "examples": self.examples,
                "latency_ms": {"p50": percentile(50), "p95": percentile(95), "p99": percentile(99),
                               "max": round(answered[-1], 2) if answered else None},
                "timeline": timeline}


# ---------------------------------------------------------------- the server's processes


class RssSampler:
    """A thread that sums the RSS of tritonserver and its descendants every `period_s`, and notes when the
    server process goes away or its children change (a stub that died or was replaced)."""

    def __init__(self, pid: int | None, period_s: float) -> None:
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self.events: list[str] = []
        self.server_gone = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._children: set[int] | None = None
        self._started = time.monotonic()

    def _sample(self) -> None:
        try:
            server = psutil.Process(self.pid)
            processes = [server, *server.children(recursive=True)]
        except psutil.NoSuchProcess:
            if not self.server_gone:
                self.events.append(f"{time.monotonic() - self._started:.0f} s: tritonserver (pid {self.pid}) is gone")
            self.server_gone = True
            return
        total, alive = 0, set()
        for process in processes:
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                total += process.memory_info().rss
                alive.add(process.pid)
            except psutil.NoSuchProcess:
                continue
        at = time.monotonic() - self._started
        if self._children is not None and alive != self._children:
            self.events.append(f"{at:.0f} s: child processes changed: gone {sorted(self._children - alive)}, "
                               f"new {sorted(alive - self._children)}")
        self._children = alive
        self.samples.append((at, total / 2**20))

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.period_s):
                return

    def __enter__(self) -> RssSampler:
        if self.pid:
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self.pid:
            self._sample()

    def summary(self) -> dict:
        if not self.samples:
            return {"sampled": False}
        times = np.array([t for t, _ in self.samples])
        mib = np.array([m for _, m in self.samples])
        window = min(60.0, (times[-1] - times[0]) / 3) if len(times) > 2 else 0.0
        first = mib[times <= times[0] + window]
        last = mib[times >= times[-1] - window]
        late = times >= times[0] + np.ptp(times) / 2
        return {"sampled": True, "samples": len(self.samples), "period_s": self.period_s, "window_s": round(window, 1),
                "first_window_median_mib": round(float(np.median(first)), 1),
                "last_window_median_mib": round(float(np.median(last)), 1),
                "slope_mib_per_min": _slope(times, mib),
                "slope_second_half_mib_per_min": _slope(times[late], mib[late]),
                "max_mib": round(float(mib.max()), 1),
                "events": self.events, "series": [[round(t, 1), round(m, 1)] for t, m in self.samples]}


def _slope(times: np.ndarray, mib: np.ndarray) -> float:
    """Least-squares MiB per minute."""
    if len(times) < 2 or np.ptp(times) == 0:
        return 0.0
    return round(float(np.polyfit(times, mib, 1)[0]) * 60, 3)
