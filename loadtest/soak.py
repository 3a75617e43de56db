"""`make soak`: overload a running server for a long time and account for every request.

  python -m loadtest.soak --grpc-url 127.0.0.1:8001 --http-url 127.0.0.1:8000 --duration-s 600 --load 2.0

1. Capacity: a closed loop of --capacity-concurrency async gRPC workers for --capacity-s seconds, then
   half as many while more than 2% are refused; the most correct answers per second is the capacity.
   Then one request at a time for --unloaded-s seconds: the unloaded latency the goals compare with.
2. Soak: an open loop (Poisson arrivals at --load x capacity, whatever the server answers) of
   zsc_client.AsyncZeroShotClient requests for --duration-s seconds, drawn from loadtest/data/workload.json.
   Every request ends up in exactly one bucket:
     correct     answered, and the answer fits the request (loadtest.workload.answer_problem)
     rejected    refused as overload: admission control ("busy: requests have waited ..."), the encoder's
                 bounded queue ("exceeds maximum queue size"), its queue timeout, UNAVAILABLE, or the
                 client's own timeout; counted by kind
     failed      any other error (an internal error under load is a bug)
     mismatched  answered with an answer that does not fit the request
     lost        no answer and no error by the end of the run plus the client timeout
   With --burst-load, the open loop has three phases instead: --load for --duration-s, then --burst-load x
   capacity for --burst-s, then --after-load x capacity for --after-s; the report says how long after the
   burst the latency was back under the first phase's p95 (per-second medians; run --load and
   --after-load equal, e.g. 0.5, so that the same load is compared).
3. Meanwhile the RSS of tritonserver and all its child processes (the Python-backend stubs) is sampled
   (memory must stay flat: first vs last minute, slope). Afterwards the server must be live, ready and answer
   a fresh request correctly within --recover-s.

The goals (reported, met or missed): correct answers/s at least 90% of the capacity (of the offered load,
when that is less), p95 of the correct answers at most 3x the unloaded p95, and, with a burst, back to the
pre-burst latency within 10 s. --client-cpus pins this load generator to some cores (the server's own, from
/proc, are reported beside them).

Writes report.json and report.md under loadtest/results/soak-<date>-<hardware>/. Exit code 1 when any
response was mismatched, lost or failed, or the server crashed or did not answer again afterwards; 2 when
the run could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil

from loadtest.bench import closed_loop
from loadtest.run import RESULTS, hardware, read_served_export_info, slug
from loadtest.server_cpu import find_tritonserver
from loadtest.server_metrics import model_deltas, scrape
from loadtest.workload import DEFAULT_WORKLOAD, LABEL_MODES, Workload, answer_problem
from zsc_client import AsyncZeroShotClient, ServerUnavailableError, ZeroShotClientError
from zsc_server.serve import cpu_list
from zsc_server.triton_errors import refusal_kind

BUCKET_S = 10.0  # timeline resolution
ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grpc-url", default="127.0.0.1:8001", help="Triton gRPC host:port (default: %(default)s)")
    parser.add_argument("--http-url", default="", help="Triton HTTP host:port for config and health "
                        "(default: the gRPC host, port 8000)")
    parser.add_argument("--metrics-url", default="", help="Triton's Prometheus endpoint (default: the HTTP host, "
                        "port 8002; 'none' to skip)")
    parser.add_argument("--duration-s", type=float, default=600.0, help="open-loop phase (default: %(default)s)")
    parser.add_argument("--load", type=float, default=2.0, help="offered rate as a multiple of the measured "
                        "capacity (default: %(default)s)")
    parser.add_argument("--capacity-s", type=float, default=20.0, help="capacity measurement (default: %(default)s)")
    parser.add_argument("--capacity-concurrency", type=int, default=16,
                        help="closed-loop workers for the capacity measurement (default: %(default)s)")
    parser.add_argument("--warmup-s", type=float, default=5.0, help="before the capacity measurement, not counted")
    parser.add_argument("--capacity", type=float, default=0.0,
                        help="requests/s to take as the capacity instead of measuring it")
    parser.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    parser.add_argument("--label-mode", choices=LABEL_MODES, default="fresh",
                        help="fresh (default): labels drawn per request, so the response cache rarely answers")
    parser.add_argument("--timeout-s", type=float, default=30.0,
                        help="client timeout per request; above the encoder's queue timeout (default: %(default)s)")
    parser.add_argument("--recover-s", type=float, default=60.0,
                        help="after the load, how long the server may take to answer a fresh request correctly "
                             "(default: %(default)s)")
    parser.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period (default: %(default)s)")
    parser.add_argument("--server-pid", type=int, default=0,
                        help="tritonserver's PID for RSS sampling (default: the local tritonserver serving "
                             "--grpc-url's port; without one, memory is not sampled)")
    parser.add_argument("--unloaded-s", type=float, default=20.0,
                        help="one request at a time for this long before the soak: the unloaded latency (default: "
                             "%(default)s; 0: skip)")
    parser.add_argument("--burst-load", type=float, default=0.0,
                        help="after --duration-s at --load, offer this multiple of the capacity for --burst-s, then "
                             "--after-load for --after-s (default: no burst)")
    parser.add_argument("--burst-s", type=float, default=60.0, help="burst length (default: %(default)s)")
    parser.add_argument("--after-load", type=float, default=0.5, help="load after the burst (default: %(default)s)")
    parser.add_argument("--after-s", type=float, default=30.0, help="time at --after-load (default: %(default)s)")
    parser.add_argument("--client-cpus", default="",
                        help="pin this load generator to these cores, e.g. 1 or 2-3 (default: not pinned)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="parent of the results folder")
    parser.add_argument("--name", default="", help="results folder name (default: soak-<date>-<hardware>)")
    return parser


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


# ---------------------------------------------------------------- phases


async def measure_capacity(url: str, sampler, score_kind: str, concurrency: int, seconds: float,
                           timeout_s: float) -> dict:
    """Closed loop (loadtest.bench's): `concurrency` workers back to back; correct answers per second."""
    run = await closed_loop(url, concurrency, seconds, sampler, score_kind, timeout_s)
    correct = len(run["latencies_ms"])
    return {"requests_per_s": correct / run["elapsed_s"], "correct": correct, "mismatched": run["wrong"],
            "errors": sum(run["errors"].values()), "seconds": round(run["elapsed_s"], 2),
            "concurrency": concurrency}


def saturating_capacity(args, sampler, score_kind: str) -> dict:
    """Closed-loop capacity: the most correct answers/s at --capacity-concurrency, halved while the server
    refuses more than 2% of the requests (a worker whose request is refused sends the next one at once, so a
    loop of refusals can measure the cost of refusing rather than the capacity)."""
    concurrency, best = args.capacity_concurrency, None
    while True:
        capacity = asyncio.run(measure_capacity(args.grpc_url, sampler, score_kind, concurrency, args.capacity_s,
                                                args.timeout_s))
        if best is None or capacity["requests_per_s"] > best["requests_per_s"]:
            best = capacity
        if concurrency <= 2 or capacity["errors"] <= 0.02 * (capacity["correct"] + capacity["errors"]):
            return best
        print(f"[soak] {capacity['errors']} of {capacity['correct'] + capacity['errors']} requests refused at "
              f"concurrency {concurrency}: measuring capacity at {concurrency // 2} too", flush=True)
        concurrency //= 2


async def open_loop(url: str, sampler, score_kind: str, phases: list[tuple[float, float]], timeout_s: float,
                    seed: int) -> tuple[Tally, dict]:
    """Poisson arrivals at each phase's (rate per second, seconds) in turn, each request its own task, none
    waited for before the next is sent; then every task gets the client timeout plus a grace period to end."""
    rng = random.Random(seed)
    tally = Tally(time.monotonic())
    tasks: set[asyncio.Task] = set()
    peak_in_flight = first_phase_sent = 0
    first_phase_end = tally.started + phases[0][1]
    async with AsyncZeroShotClient(url, "grpc", timeout_s=timeout_s) as client:

        async def one(request) -> None:
            started = time.monotonic()
            try:
                result = await client.classify(request.text, list(request.labels), multi_label=request.multi_label)
            except Exception as exc:  # noqa: BLE001 - every outcome is counted, whatever it is
                tally.on_error(started, exc)
                return
            problem = answer_problem(request, result.labels, result.scores, score_kind)
            if result.text != request.text:
                problem = f"answer for text {result.text!r} to a request for {request.text!r}"
            tally.on_answer(started, (time.monotonic() - started) * 1e3, problem)

        end = tally.started + sum(seconds for _, seconds in phases)
        due = tally.started
        while True:
            due += rng.expovariate(rate_at(phases, due - tally.started))
            if due >= end:
                break
            # sleep(0) when behind: the answers' tasks must run even while the sender catches up
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(one(sampler.next()))
            tally.on_sent(time.monotonic())
            first_phase_sent += due < first_phase_end
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            peak_in_flight = max(peak_in_flight, len(tasks))
        sending_s = time.monotonic() - tally.started
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=timeout_s + 10)
            tally.lost = len(pending)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    first_rate, first_s = phases[0]
    return tally, {"offered_per_s": round(first_rate, 2), "phases": [[round(r, 2), s] for r, s in phases],
                   "achieved_send_per_s": round(first_phase_sent / first_s, 2), "sending_s": round(sending_s, 2),
                   "peak_in_flight": peak_in_flight}


def rate_at(phases: list[tuple[float, float]], elapsed_s: float) -> float:
    """The offered rate of the phase `elapsed_s` seconds into the run falls in (the last one's after it)."""
    for rate, seconds in phases:
        if elapsed_s < seconds:
            return rate
        elapsed_s -= seconds
    return phases[-1][0]


def recovery_s(per_second: dict[int, list[float]], burst_end_s: float, until_s: float, bound_ms: float) -> float | None:
    """Seconds after the burst's end until the per-second median latency stays at or under `bound_ms` for
    the rest of the run (None: it never did)."""
    seconds = [s for s in range(int(burst_end_s), int(until_s)) if per_second.get(s)]
    recovered = None
    for second in seconds:
        if np.median(per_second[second]) <= bound_ms:
            recovered = second if recovered is None else recovered
        else:
            recovered = None
    return None if recovered is None else max(0.0, recovered - burst_end_s)


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


async def final_check(url: str, http: str, sampler, score_kind: str, timeout_s: float, recover_s: float) -> dict:
    """After the load: live, ready, and a fresh request answered correctly, tried until `recover_s` have passed
    (a server whose queue is unbounded still works through the backlog its abandoned requests left)."""
    live, _ = http_get(f"http://{http}/v2/health/live")
    ready, _ = http_get(f"http://{http}/v2/health/ready")
    started, answer = time.monotonic(), "no answer"
    async with AsyncZeroShotClient(url, "grpc", timeout_s=timeout_s) as client:
        while True:
            request = sampler.next()
            try:
                result = await client.classify(request.text, list(request.labels), multi_label=request.multi_label)
                answer = answer_problem(request, result.labels, result.scores, score_kind) or "correct"
                break
            except ZeroShotClientError as exc:
                answer = f"error: {exc}"
            if time.monotonic() - started > recover_s:
                break
            await asyncio.sleep(1)
    return {"live": live == 200, "ready": ready == 200, "answer": answer,
            "answered_after_s": round(time.monotonic() - started, 1)}


def admission_policy(http: str) -> dict:
    """Admission control as served (the preprocess config's admission_* parameters)."""
    status, body = http_get(f"http://{http}/v2/models/preprocess/config")
    if status != 200:
        return {}
    parameters = json.loads(body).get("parameters", {})
    return {key: value["string_value"] for key, value in parameters.items() if key.startswith("admission_")}


def queue_policy(http: str) -> dict:
    """The encoder's dynamic batching and queue policy as served (what decides 'rejected')."""
    status, body = http_get(f"http://{http}/v2/models/encoder/config")
    if status != 200:
        return {}
    batching = json.loads(body).get("dynamic_batching", {})
    return {key: batching[key] for key in ("max_queue_delay_microseconds", "default_queue_policy") if key in batching}


# ---------------------------------------------------------------- report


def verdict(report: dict) -> list[str]:
    """What makes the soak fail (empty: passed)."""
    soak, server = report["soak"], report["server"]
    problems = []
    for key in ("mismatched", "lost", "failed"):
        if soak[key]:
            problems.append(f"{soak[key]} {key}")
    if server["crashed"]:
        problems.append("the server crashed")
    elif not server["ready"] or server["answer"] != "correct":
        problems.append(f"the server was not ready and answering correctly {server['answered_after_s']:.0f} s "
                        f"after the load ({server['answer']})")
    return problems


def markdown(report: dict) -> str:
    meta, capacity, soak, memory, server = (report[k] for k in ("meta", "capacity", "soak", "memory", "server"))
    lines = [f"# Soak {meta['started']}: {'PASSED' if not report['problems'] else 'FAILED'}", "",
             f"{meta['model']}, {meta['runtime']}, {meta['precision']}, max_length {meta['max_length']}, "
             f"{meta['mode']} mode; {meta['hardware']}; workload {meta['workload']} ({meta['label_mode']} labels); "
             f"open-loop Poisson arrivals from one async gRPC client (zsc_client) on the same host; client "
             f"timeout {meta['timeout_s']:.0f} s; encoder batching: {json.dumps(meta['queue_policy'])}.",
             "", "| | |", "|---|---|",
             f"| capacity (closed loop, {capacity['concurrency']} workers, {capacity['seconds']:.0f} s) | "
             f"{capacity['requests_per_s']:.1f} req/s |",
             "| unloaded latency (one request at a time) | "
             + (f"p50 {report['unloaded']['p50_ms']} ms, p95 {report['unloaded']['p95_ms']} ms "
                f"({report['unloaded']['requests']} requests) |" if report.get("unloaded") else "not measured |"),
             f"| offered load | {meta['load']:g} x capacity = {soak['rates']['offered_per_s']:.1f} req/s for "
             f"{meta['duration_s']:.0f} s (sent at {soak['rates']['achieved_send_per_s']:.1f} req/s)"
             + "".join(f", then {rate:.1f} req/s for {seconds:.0f} s" for rate, seconds in soak["rates"]["phases"][1:])
             + " |",
             f"| sent | {soak['sent']} |",
             f"| correct | {soak['correct']} ({soak['correct'] / max(1, soak['sent']):.1%}), "
             f"{soak['correct'] / max(1e-9, soak['rates']['sending_s']):.1f} req/s |",
             f"| rejected | {soak['rejected']} {_counts(soak['rejected_by_kind'])} |",
             f"| failed | {soak['failed']} {_counts(soak['failed_by_message'])} |",
             f"| mismatched | {soak['mismatched']} |",
             f"| lost | {soak['lost']} |",
             f"| latency of correct answers | p50 {soak['latency_ms']['p50']} ms, p95 {soak['latency_ms']['p95']} ms, "
             f"p99 {soak['latency_ms']['p99']} ms, max {soak['latency_ms']['max']} ms |",
             f"| peak requests in flight | {soak['rates']['peak_in_flight']} |"]
    if memory["sampled"]:
        lines.append(f"| RSS, tritonserver + children | median {memory['first_window_median_mib']} MiB in the first "
                     f"{memory['window_s']:.0f} s, {memory['last_window_median_mib']} MiB in the last; slope "
                     f"{memory['slope_mib_per_min']:+.2f} MiB/min overall, "
                     f"{memory['slope_second_half_mib_per_min']:+.2f} MiB/min over the second half; max "
                     f"{memory['max_mib']} MiB ({memory['samples']} samples, every {memory['period_s']:g} s; the "
                     f"response cache, when on, grows until full) |")
    else:
        lines.append("| RSS | not sampled (no local tritonserver found for this port; pass --server-pid) |")
    lines.append(f"| server after the load | live {server['live']}, ready {server['ready']}, fresh request: "
                 f"{server['answer']} after {server['answered_after_s']:.1f} s |")
    for event in memory.get("events", []):
        lines.append(f"| process event | {event} |")
    if report["problems"]:
        lines += ["", "Failed because: " + "; ".join(report["problems"]) + "."]
    lines += ["", *goal_lines(report["goals"])]
    if soak["examples"]:
        lines += ["", "Examples:", *[f"- {example}" for example in soak["examples"]]]
    lines += ["", "Timeline (per 10 s of send time)", "", "| t (s) | sent | correct | rejected | other | p50 ms |",
              "|---|---|---|---|---|---|"]
    for row in soak["timeline"]:
        lines.append(f"| {row['t_s']:.0f} | {row['sent']} | {row['correct']} | {row['rejected']} | {row['other']} "
                     f"| {row['p50_ms'] if row['p50_ms'] is not None else '-'} |")
    return "\n".join(lines) + "\n"


def goal_lines(result: dict) -> list[str]:
    def mark(met: bool) -> str:
        return "met" if met else "MISSED"

    lines = ["Goals (steady phase):",
             f"- correct answers/s {result['goodput_share']:.0%} of the lesser of capacity and offered load "
             f"(goal ≥ 90%): "
             f"{mark(result['goodput_met'])}",
             f"- p95 of correct answers {result['accepted_p95_ms']} ms vs unloaded p95 {result['unloaded_p95_ms']} ms "
             f"(goal ≤ 3x): {mark(result['latency_met'])}"]
    if "recovered_after_s" in result:
        after = result["recovered_after_s"]
        lines.append(f"- after the burst, per-second medians back under the pre-burst p95 "
                     f"({result['recovery_bound_ms']} ms) in {'never' if after is None else f'{after:.0f} s'} "
                     f"(goal ≤ 10 s): {mark(result['recovery_met'])}")
    return lines


def _counts(counts: dict[str, int]) -> str:
    return "(" + ", ".join(f"{key}: {value}" for key, value in counts.items()) + ")" if counts else ""


def allowed_cpus(pid: int | None) -> str:
    """The cores a process may run on, as /proc says (e.g. '0-1')."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as status:
            for line in status:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def goals(report: dict, phases: list[tuple[float, float]], per_second: dict[int, list[float]]) -> dict:
    """The overload goals over the first phase (the steady load), and the burst's recovery when there was one."""
    steady_s = phases[0][1]
    steady = sorted(latency for second, latencies in per_second.items() if second < steady_s for latency in latencies)
    # what the server could answer: all of it below capacity (--load < 1), its capacity above
    answerable = min(phases[0][0], report["capacity"]["requests_per_s"])
    unloaded_p95 = (report.get("unloaded") or {}).get("p95_ms")
    result = {"goodput_share": round(len(steady) / steady_s / answerable, 3),
              "accepted_p95_ms": round(float(np.percentile(steady, 95)), 1) if steady else None,
              "unloaded_p95_ms": unloaded_p95}
    result["goodput_met"] = result["goodput_share"] >= 0.9
    result["latency_met"] = bool(unloaded_p95 and steady and result["accepted_p95_ms"] <= 3 * unloaded_p95)
    if len(phases) == 3 and steady:
        # back to the latency the same normal load had before the burst (--load, --after-load: run both equal)
        bound = result["accepted_p95_ms"]
        burst_end = phases[0][1] + phases[1][1]
        result["recovery_bound_ms"] = bound
        result["recovered_after_s"] = recovery_s(per_second, burst_end, burst_end + phases[2][1], bound)
        result["recovery_met"] = result["recovered_after_s"] is not None and result["recovered_after_s"] <= 10
    return result


def run(args) -> tuple[Path, dict]:
    if args.client_cpus:
        os.sched_setaffinity(0, cpu_list(args.client_cpus))
    host = args.grpc_url.rsplit(":", 1)[0]
    http = (args.http_url or f"{host}:8000").removeprefix("http://").rstrip("/")
    metrics_url = args.metrics_url or f"http://{http.rsplit(':', 1)[0]}:8002/metrics"
    served = read_served_export_info(f"http://{http}")
    if not served:
        raise ValueError(f"no zero_shot model config at http://{http}: is the server running (`make serve`)?")
    score_kind = "cosine" if served.get("mode") == "embedding" else "probabilities"
    workload = Workload.load(args.workload)
    # distinct requests (a whitespace tag the tokenizer drops): over minutes the workload's texts and label
    # sets would repeat, and the response cache would answer the repeats
    sampler = workload.sampler(args.label_mode, seed=args.seed, distinct=True)
    pid = args.server_pid or find_tritonserver(int(args.grpc_url.rsplit(":", 1)[-1]))
    meta = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "hardware": hardware(),
            "model": served.get("source", "unknown"), "runtime": served.get("runtime", "unknown"),
            "precision": served.get("precision", "unknown"), "max_length": served.get("max_length"),
            "mode": served.get("mode", "nli"), "grpc_url": args.grpc_url, "server_pid": pid,
            "workload": str(args.workload.resolve().relative_to(ROOT) if args.workload.resolve().is_relative_to(ROOT)
                            else args.workload),
            "label_mode": args.label_mode, "mean_labels": round(sampler.mean_labels(), 2), "load": args.load,
            "duration_s": args.duration_s, "timeout_s": args.timeout_s, "seed": args.seed,
            "queue_policy": queue_policy(http), "admission": admission_policy(http),
            "load_generator": f"one asyncio process on the same host, cores {allowed_cpus(None)}; the server's "
                              f"cores: {allowed_cpus(pid)}"}
    print(f"[soak] {meta['model']} ({meta['runtime']}, {meta['precision']}) on {meta['hardware']}; "
          f"tritonserver pid {pid or 'not found: memory not sampled'}", flush=True)

    if args.capacity > 0:
        capacity = {"requests_per_s": args.capacity, "concurrency": 0, "seconds": 0, "given": True}
    else:
        if args.warmup_s > 0:
            asyncio.run(measure_capacity(args.grpc_url, sampler, score_kind, args.capacity_concurrency,
                                         args.warmup_s, args.timeout_s))
        capacity = saturating_capacity(args, sampler, score_kind)
        if capacity["requests_per_s"] <= 0:
            raise ValueError(f"no correct answer while measuring capacity: {capacity}")
    unloaded = None
    if args.unloaded_s > 0:
        alone = asyncio.run(closed_loop(args.grpc_url, 1, args.unloaded_s, sampler, score_kind, args.timeout_s))
        latencies = alone["latencies_ms"]
        unloaded = {"p50_ms": round(float(np.percentile(latencies, 50)), 1),
                    "p95_ms": round(float(np.percentile(latencies, 95)), 1), "requests": len(latencies),
                    "seconds": args.unloaded_s} if latencies else None
    rate = args.load * capacity["requests_per_s"]
    phases = [(rate, args.duration_s)]
    if args.burst_load > 0:
        phases += [(args.burst_load * capacity["requests_per_s"], args.burst_s),
                   (args.after_load * capacity["requests_per_s"], args.after_s)]
    print(f"[soak] capacity {capacity['requests_per_s']:.1f} req/s, unloaded p95 "
          f"{unloaded['p95_ms'] if unloaded else '?'} ms; offering "
          + ", then ".join(f"{r:.1f} req/s for {s:.0f} s" for r, s in phases) + " ...", flush=True)
    before = _scrape(metrics_url)
    # memory over the soak itself: its first minute is already under load, warm-up and capacity runs are not in it
    with RssSampler(pid, args.sample_s) as rss:
        tally, rates = asyncio.run(open_loop(args.grpc_url, sampler, score_kind, phases, args.timeout_s, args.seed))
    after = _scrape(metrics_url)
    end = asyncio.run(final_check(args.grpc_url, http, sampler, score_kind, args.timeout_s, args.recover_s))
    end["crashed"] = rss.server_gone or not end["live"]
    report = {"meta": meta, "capacity": capacity, "unloaded": unloaded, "soak": {**tally.summary(), "rates": rates},
              "memory": rss.summary(), "server": end,
              "triton_counters": model_deltas(before, after) if before and after else {}}
    report["problems"] = verdict(report)
    report["goals"] = goals(report, phases, tally.per_second)

    name = args.name or f"soak-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{slug(meta['hardware'])}"
    folder = args.out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(markdown(report), encoding="utf-8")
    return folder, report


def _scrape(url: str) -> list:
    if url == "none":
        return []
    try:
        return scrape(url)
    except (OSError, ValueError):
        return []


def summary_line(report: dict) -> str:
    soak, memory = report["soak"], report["memory"]
    rss = (f"RSS {memory['first_window_median_mib']} -> {memory['last_window_median_mib']} MiB "
           f"({memory['slope_mib_per_min']:+.2f} MiB/min)" if memory["sampled"] else "RSS not sampled")
    return (f"{soak['sent']} sent: {soak['correct']} correct, {soak['rejected']} rejected, {soak['failed']} failed, "
            f"{soak['mismatched']} mismatched, {soak['lost']} lost; p95 {soak['latency_ms']['p95']} ms; {rss}; "
            f"server {'crashed' if report['server']['crashed'] else 'up'}, fresh request {report['server']['answer']} "
            f"after {report['server']['answered_after_s']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.load <= 0 or args.duration_s <= 0:
        print("soak: --load and --duration-s must be positive", file=sys.stderr)
        return 2
    try:
        folder, report = run(args)
    except (OSError, ValueError, ZeroShotClientError) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    print(f"[soak] {summary_line(report)}")
    print(f"[soak] {'PASSED' if not report['problems'] else 'FAILED: ' + '; '.join(report['problems'])}; "
          f"report in {folder}", flush=True)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
