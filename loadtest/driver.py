"""The one request driver every measurement here uses: a closed loop (N workers back to back), an open loop
(Poisson arrivals in phases, whatever the server answers) and the raw encoder alone (the ensemble's ceiling).
Every answer is checked against its request (loadtest.workload.answer_problem) and every request ends up in
one bucket of a Tally: correct, rejected (overload refusals, by kind), failed, mismatched or lost."""

from __future__ import annotations

import asyncio
import random
import re
import resource
import time

import numpy as np

from loadtest.workload import answer_problem
from zsc_client import AsyncZeroShotClient, ServerUnavailableError, ZeroShotClientError
from zsc_server.triton_errors import refusal_kind

BUCKET_S = 10.0  # the open loop's timeline resolution
# Triton 2.51's dynamic batcher, when its queue has a policy (a size or time bound), can sleep its full
# 500 ms wait while the instance is free and requests queue, until the next request arrives: in a closed loop
# none arrives, so the queue stalls (docs/limits-failures-security.md, "Overload"). Answers this slow are
# counted as such stalls.
STALL_MS = 400
CONCURRENCY = "1,5,10,32,64,128"  # the default sweep of in-flight requests (make bench, make perf)


def connection_budget(reserve: int = 256) -> int:
    """As many HTTP connections as this process may hold at once: the soft open-file limit raised to the hard
    one, less `reserve` descriptors for everything else. An open loop's requests wait for nothing on this side:
    queued behind a client's connection pool, their latency would be the load generator's, not the server's."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - reserve)


def parse_levels(spec: str, what: str = "concurrency") -> list[int]:
    """'1,5,10' or perf_analyzer's 'START:END:STEP' -> the concurrency levels (or user counts), in order."""
    try:
        if ":" in spec:
            parts = [int(part) for part in spec.split(":")]
            start = parts[0]
            end = parts[1] if len(parts) > 1 else start  # as perf_analyzer reads it: no END, one level
            step = parts[2] if len(parts) > 2 else 1
            levels = list(range(start, end + 1, step)) if step > 0 and len(parts) <= 3 else []
        else:
            levels = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise ValueError(f"{what} {spec!r} is not a list of positive counts ('1,5,10') or START:END:STEP")
    return levels


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


def percentiles(values_ms: list[float], digits: int = 2) -> dict[str, float | None]:
    ordered = sorted(values_ms)

    def at(q: float) -> float | None:
        return round(float(np.percentile(ordered, q)), digits) if ordered else None

    return {"p50": at(50), "p95": at(95), "p99": at(99), "max": round(ordered[-1], digits) if ordered else None}


class Tally:
    """Every request's bucket, latencies of correct answers (and the pairs they scored), a timeline."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.sent = self.correct = self.mismatched = self.lost = self.pairs = 0
        self.rejected: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self.latencies_ms: list[float] = []
        self.refusal_latencies_ms: list[float] = []  # how long a refusal took to come back
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

    def on_answer(self, at: float, latency_ms: float, problem: str | None, pairs: int = 0) -> None:
        bucket = self._bucket(at)
        if problem:
            self.mismatched += 1
            bucket["other"] += 1
            self._example(f"mismatched: {problem}")
            return
        self.correct += 1
        self.pairs += pairs
        self.latencies_ms.append(latency_ms)
        self.per_second.setdefault(int(at - self.started), []).append(latency_ms)
        bucket["correct"] += 1
        bucket["latencies_ms"].append(latency_ms)

    def on_error(self, at: float, error: BaseException, latency_ms: float | None = None) -> None:
        kind = rejection_kind(error) if isinstance(error, ZeroShotClientError) else None
        if kind:
            self.rejected[kind] = self.rejected.get(kind, 0) + 1
            if latency_ms is not None:
                self.refusal_latencies_ms.append(latency_ms)
            self._bucket(at)["rejected"] += 1
            return
        key = short(error.message) if isinstance(error, ZeroShotClientError) else f"{type(error).__name__}: {error}"
        self.failed[key] = self.failed.get(key, 0) + 1
        self._bucket(at)["other"] += 1
        self._example(f"failed: {key}")

    def _example(self, text: str) -> None:
        if len(self.examples) < 10:
            self.examples.append(text)

    def errors(self) -> dict[str, int]:
        """Refusals by kind and failures by message together (what a closed loop reports as errors)."""
        return {**self.rejected, **self.failed}

    def summary(self) -> dict:
        timeline = [{"t_s": index * BUCKET_S, **{key: bucket[key] for key in ("sent", "correct", "rejected", "other")},
                     "p50_ms": round(float(np.median(bucket["latencies_ms"])), 2) if bucket["latencies_ms"] else None}
                    for index, bucket in sorted(self.timeline.items())]
        return {"sent": self.sent, "correct": self.correct, "rejected": sum(self.rejected.values()),
                "rejected_by_kind": dict(sorted(self.rejected.items(), key=lambda kv: -kv[1])),
                "failed": sum(self.failed.values()),
                "failed_by_message": dict(sorted(self.failed.items(), key=lambda kv: -kv[1])),
                "mismatched": self.mismatched, "lost": self.lost, "examples": self.examples,
                "latency_ms": percentiles(self.latencies_ms),
                "refusal_latency_ms": percentiles(self.refusal_latencies_ms), "timeline": timeline}


async def classify_into(tally: Tally, client, request, score_kind: str) -> None:
    """One request through `client`, its outcome counted."""
    started = time.monotonic()
    try:
        result = await client.classify(request.text, list(request.labels), multi_label=request.multi_label)
    except Exception as exc:  # noqa: BLE001 - every outcome is counted, whatever it is
        tally.on_error(started, exc, (time.monotonic() - started) * 1e3)
        return
    problem = answer_problem(request, result.labels, result.scores, score_kind)
    if result.text != request.text:
        problem = f"answer for text {result.text!r} to a request for {request.text!r}"
    tally.on_answer(started, (time.monotonic() - started) * 1e3, problem, len(request.labels))


async def closed_loop(url: str, concurrency: int, seconds: float, sampler, score_kind: str,
                      timeout_s: float, protocol: str = "grpc") -> dict:
    """`concurrency` workers, each sending its next request when its previous answer arrives, for `seconds`."""
    async with AsyncZeroShotClient(url, protocol, timeout_s=timeout_s, max_connections=concurrency) as client:
        began, cpu_began = time.monotonic(), time.process_time()
        tally, deadline = Tally(began), began + seconds

        async def worker() -> None:
            while time.monotonic() < deadline:
                tally.on_sent(time.monotonic())
                await classify_into(tally, client, sampler.next(), score_kind)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, client_cpu = time.monotonic() - began, time.process_time() - cpu_began
    return {"latencies_ms": tally.latencies_ms, "pairs": tally.pairs, "errors": tally.errors(),
            "wrong": tally.mismatched, "elapsed_s": elapsed, "client_cpu_s": client_cpu}


def rate_at(phases: list[tuple[float, float]], elapsed_s: float) -> float:
    """The offered rate of the phase `elapsed_s` seconds into the run falls in (the last one's after it)."""
    for rate, seconds in phases:
        if elapsed_s < seconds:
            return rate
        elapsed_s -= seconds
    return phases[-1][0]


async def open_loop(url: str, sampler, score_kind: str, phases: list[tuple[float, float]], timeout_s: float,
                    seed: int, protocol: str = "grpc") -> tuple[Tally, dict]:
    """Poisson arrivals at each phase's (rate per second, seconds) in turn, each request its own task, none
    waited for before the next is sent; then every task gets the client timeout plus a grace period to end."""
    rng = random.Random(seed)
    tally = Tally(time.monotonic())
    tasks: set[asyncio.Task] = set()
    peak_in_flight = first_phase_sent = 0
    first_phase_end = tally.started + phases[0][1]
    connections = connection_budget()
    async with AsyncZeroShotClient(url, protocol, timeout_s=timeout_s, max_connections=connections) as client:
        end, due = tally.started + sum(seconds for _, seconds in phases), tally.started
        while True:
            due += rng.expovariate(rate_at(phases, due - tally.started))
            if due >= end:
                break
            # sleep(0) when behind: the answers' tasks must run even while the sender catches up
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            task = asyncio.create_task(classify_into(tally, client, sampler.next(), score_kind))
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
                   "peak_in_flight": peak_in_flight, "max_connections": connections if protocol == "http" else None}


async def tokenized_pairs(client, request, timeout_s: float) -> dict[str, np.ndarray]:
    """What the preprocess model makes of `request`: the encoder's inputs for its pairs (the ones the exported
    encoder takes: no token_type_ids for RoBERTa-family models)."""
    import tritonclient.grpc as grpcclient

    from zsc_client.request import build_inputs

    response = await client.infer("preprocess", build_inputs(grpcclient, request.text, list(request.labels),
                                                            None, request.multi_label),
                                  client_timeout=timeout_s)
    arrays = {name: response.as_numpy(name) for name in ("input_ids", "attention_mask", "token_type_ids")}
    return {name: array for name, array in arrays.items() if array is not None}


async def encoder_ceiling(url: str, concurrency: int, seconds: float, request, timeout_s: float) -> dict:
    """The encoder model alone, fed one workload request's pre-tokenized pairs by `concurrency` workers:
    the same pairs the ensemble sends it, without tokenization, post-processing and ensemble hops. Refusals
    (a queue bound) are counted, not fatal; so are answers slower than STALL_MS."""
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aio
    from tritonclient.utils import InferenceServerException

    client = aio.InferenceServerClient(url)
    latencies_ms: list[float] = []
    refused: list[str] = []
    try:
        arrays = await tokenized_pairs(client, request, timeout_s)
        inputs = []
        for name, array in arrays.items():
            tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array.astype(np.int64))
            inputs.append(tensor)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    await client.infer("encoder", inputs, client_timeout=timeout_s)
                except InferenceServerException as error:
                    refused.append(error.message())
                    continue
                latencies_ms.append((time.perf_counter() - sent) * 1e3)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    finally:
        await client.close()
    rows, sequence = arrays["input_ids"].shape
    figures = percentiles(latencies_ms)
    return {"rows": int(rows), "sequence": int(sequence), "concurrency": concurrency,
            "requests": len(latencies_ms), "pairs_per_s": len(latencies_ms) * rows / elapsed,
            "p50_ms": figures["p50"], "max_ms": figures["max"],
            "stalls": sum(latency >= STALL_MS for latency in latencies_ms),
            "refused": len(refused), "refusals": sorted(set(refused))[:3]}
