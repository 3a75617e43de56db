"""`make soak`: overload a running server for a long time and account for every request.

  python -m loadtest.soak --grpc-url 127.0.0.1:8001 --http-url 127.0.0.1:8000 --duration-s 600 --load 2.0

1. Capacity: a closed loop of --capacity-concurrency async workers (over --protocol: gRPC by default, or
   HTTP) for --capacity-s seconds, then half as many while more than 2% are refused; the most correct
   answers per second is the capacity.
   Then one request at a time for --unloaded-s seconds: the unloaded latency the goals compare with.
2. Soak: an open loop (Poisson arrivals at --load x capacity, whatever the server answers) of
   zsc_client.AsyncZeroShotClient requests for --duration-s seconds, drawn from loadtest/data/workload.json.
   Every request ends up in exactly one bucket:
     correct     answered, and the answer fits the request (loadtest.workload.answer_problem)
     rejected    refused as overload: admission control ("busy: requests would wait ..."), the encoder's
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
when that is less), p95 of the correct answers at most 3x the p95 at capacity and at most 1 s, refusals
answered in p95 50 ms, and, with a burst, back to the pre-burst latency within 5 s. --client-cpus pins this
load generator to some cores (the server's own, from /proc, are reported beside them).

Writes report.json and report.md under loadtest/results/soak-<date>-<hardware>/. Exit code 1 when any
response was mismatched, lost or failed, or the server crashed or did not answer again afterwards; 2 when
the run could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from loadtest import results
from loadtest.driver import closed_loop, open_loop, percentiles
from loadtest.server import RssSampler, Target, allowed_cpus
from loadtest.server_metrics import model_deltas
from loadtest.soak_report import goals, markdown, summary_line, verdict
from loadtest.workload import Workload, answer_problem, score_kind_of
from zsc_client import AsyncZeroShotClient, ZeroShotClientError
from zsc_server.arguments import cores, non_negative, positive, positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = results.parser("soak", __doc__, server="127.0.0.1:8001", label_help="fresh (default): labels drawn "
                            "per request; every request is distinct whatever the mode (a whitespace tag the "
                            "tokenizers drop), so the response cache answers none")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc",
                        help="what the load is sent over: gRPC to --grpc-url, or KServe v2 JSON to --http-url "
                             "(default: %(default)s)")
    parser.add_argument("--duration-s", type=positive, default=600.0, help="open-loop phase (default: %(default)s)")
    parser.add_argument("--load", type=positive, default=2.0, help="offered rate as a multiple of the measured "
                        "capacity (default: %(default)s)")
    parser.add_argument("--capacity-s", type=positive, default=20.0, help="capacity measurement (default: %(default)s)")
    parser.add_argument("--capacity-concurrency", type=positive_int, default=16,
                        help="closed-loop workers for the capacity measurement (default: %(default)s)")
    parser.add_argument("--warmup-s", type=non_negative, default=5.0,
                        help="before the capacity measurement, not counted")
    parser.add_argument("--capacity", type=non_negative, default=0.0,
                        help="requests/s to take as the capacity instead of measuring it")
    parser.add_argument("--timeout-s", type=positive, default=30.0,
                        help="client timeout per request; above the encoder's queue timeout (default: %(default)s)")
    parser.add_argument("--recover-s", type=non_negative, default=60.0,
                        help="after the load, how long the server may take to answer a fresh request correctly "
                             "(default: %(default)s)")
    parser.add_argument("--sample-s", type=positive, default=5.0, help="RSS sampling period (default: %(default)s)")
    parser.add_argument("--server-pid", type=int, default=0,
                        help="tritonserver's PID for RSS sampling (default: the local tritonserver serving "
                             "--grpc-url's port; without one, memory is not sampled)")
    parser.add_argument("--unloaded-s", type=non_negative, default=20.0,
                        help="one request at a time for this long before the soak: the unloaded latency (default: "
                             "%(default)s; 0: skip)")
    parser.add_argument("--burst-load", type=non_negative, default=0.0,
                        help="after --duration-s at --load, offer this multiple of the capacity for --burst-s, then "
                             "--after-load for --after-s (default: no burst)")
    parser.add_argument("--burst-s", type=positive, default=60.0, help="burst length (default: %(default)s)")
    parser.add_argument("--after-load", type=positive, default=0.5, help="load after the burst (default: %(default)s)")
    parser.add_argument("--after-s", type=positive, default=30.0, help="time at --after-load (default: %(default)s)")
    parser.add_argument("--client-cpus", type=cores, default="",
                        help="pin this load generator to these cores, e.g. 1 or 2-3 (default: not pinned)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="", help="results folder name (default: soak-<date>-<hardware>)")
    return parser


# ---------------------------------------------------------------- phases


async def measure_capacity(url: str, sampler, score_kind: str, concurrency: int, seconds: float,
                           timeout_s: float, protocol: str = "grpc") -> dict:
    """Closed loop (loadtest.bench's): `concurrency` workers back to back; correct answers per second."""
    run = await closed_loop(url, concurrency, seconds, sampler, score_kind, timeout_s, protocol)
    correct = len(run["latencies_ms"])
    figures = percentiles(run["latencies_ms"], digits=1)
    return {"requests_per_s": correct / run["elapsed_s"], "correct": correct, "mismatched": run["wrong"],
            "errors": sum(run["errors"].values()), "seconds": round(run["elapsed_s"], 2),
            "concurrency": concurrency, "p50_ms": figures["p50"], "p95_ms": figures["p95"]}


def saturating_capacity(args, url: str, sampler, score_kind: str) -> dict:
    """Closed-loop capacity: the most correct answers/s at --capacity-concurrency, halved while the server
    refuses more than 2% of the requests (a worker whose request is refused sends the next one at once, so a
    loop of refusals can measure the cost of refusing rather than the capacity)."""
    concurrency, best = args.capacity_concurrency, None
    while True:
        capacity = asyncio.run(measure_capacity(url, sampler, score_kind, concurrency, args.capacity_s,
                                                args.timeout_s, args.protocol))
        if best is None or capacity["requests_per_s"] > best["requests_per_s"]:
            best = capacity
        if concurrency <= 2 or capacity["errors"] <= 0.02 * (capacity["correct"] + capacity["errors"]):
            return best
        print(f"[soak] {capacity['errors']} of {capacity['correct'] + capacity['errors']} requests refused at "
              f"concurrency {concurrency}: measuring capacity at {concurrency // 2} too", flush=True)
        concurrency //= 2


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc).encode()


async def final_check(url: str, http: str, sampler, score_kind: str, timeout_s: float, recover_s: float,
                      protocol: str = "grpc") -> dict:
    """After the load: live, ready, and a fresh request answered correctly, tried until `recover_s` have passed
    (a server whose queue is unbounded still works through the backlog its abandoned requests left)."""
    live, _ = http_get(f"http://{http}/v2/health/live")
    ready, _ = http_get(f"http://{http}/v2/health/ready")
    started, answer = time.monotonic(), "no answer"
    async with AsyncZeroShotClient(url, protocol, timeout_s=timeout_s) as client:
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


def served_policy(target: Target) -> tuple[dict, dict]:
    """Admission control (the preprocess config's admission_* parameters) and the encoder's dynamic batching
    and queue policy (what decides 'rejected'), as served."""
    parameters = target.model_config("preprocess").get("parameters", {})
    admission = {key: value["string_value"] for key, value in parameters.items() if key.startswith("admission_")}
    batching = target.model_config("encoder").get("dynamic_batching", {})
    queue = {key: batching[key] for key in ("max_queue_delay_microseconds", "default_queue_policy") if key in batching}
    return admission, queue


def run(args) -> tuple[Path, dict]:
    if args.client_cpus:
        os.sched_setaffinity(0, args.client_cpus)
    target = Target.from_urls(args.grpc_url, args.http_url, args.metrics_url).check_ready(args.protocol)
    http = target.http_url
    url = target.url(args.protocol)
    served = target.export_info()
    if not served:
        raise ValueError(f"no zero_shot model config at http://{http}: is the server running (`make serve`)?")
    score_kind = score_kind_of(served)
    workload = Workload.load(args.workload)
    # distinct requests (a whitespace tag the tokenizer drops): over minutes the workload's texts and label
    # sets would repeat, and the response cache would answer the repeats
    sampler = workload.sampler(args.label_mode, seed=args.seed, distinct=True)
    pid = args.server_pid or target.server_pid()
    admission, queue = served_policy(target)
    meta = results.served_meta(
        served, mode=served.get("mode", "nli"), grpc_url=args.grpc_url, protocol=args.protocol, server_pid=pid,
        workload=results.shown(args.workload), label_mode=args.label_mode, mean_labels=round(sampler.mean_labels(), 2),
        load=args.load, duration_s=args.duration_s, timeout_s=args.timeout_s, seed=args.seed, note=args.note,
        queue_policy=queue, admission=admission, load_generator=f"one asyncio process on the same host, cores "
        f"{allowed_cpus(None)}; the server's cores: {allowed_cpus(pid)}")
    print(f"[soak] {meta['model']} ({meta['runtime']}, {meta['precision']}) on {meta['hardware']}; "
          f"tritonserver pid {pid or 'not found: memory not sampled'}", flush=True)

    if args.capacity > 0:
        capacity = {"requests_per_s": args.capacity, "concurrency": 0, "seconds": 0, "given": True}
    else:
        if args.warmup_s > 0:
            asyncio.run(measure_capacity(url, sampler, score_kind, args.capacity_concurrency, args.warmup_s,
                                         args.timeout_s, args.protocol))
        capacity = saturating_capacity(args, url, sampler, score_kind)
        if capacity["requests_per_s"] <= 0:
            raise ValueError(f"no correct answer while measuring capacity: {capacity}")
    unloaded = None
    if args.unloaded_s > 0:
        alone = asyncio.run(measure_capacity(url, sampler, score_kind, 1, args.unloaded_s, args.timeout_s,
                                             args.protocol))
        unloaded = {"p50_ms": alone["p50_ms"], "p95_ms": alone["p95_ms"], "requests": alone["correct"],
                    "seconds": args.unloaded_s} if alone["correct"] else None
    rate = args.load * capacity["requests_per_s"]
    phases = [(rate, args.duration_s)]
    if args.burst_load > 0:
        phases += [(args.burst_load * capacity["requests_per_s"], args.burst_s),
                   (args.after_load * capacity["requests_per_s"], args.after_s)]
    print(f"[soak] capacity {capacity['requests_per_s']:.1f} req/s, unloaded p95 "
          f"{unloaded['p95_ms'] if unloaded else '?'} ms; offering "
          + ", then ".join(f"{r:.1f} req/s for {s:.0f} s" for r, s in phases) + " ...", flush=True)
    before = target.counters()
    # memory over the soak itself: its first minute is already under load, warm-up and capacity runs are not in it
    with RssSampler(pid, args.sample_s) as rss:
        tally, rates = asyncio.run(open_loop(url, sampler, score_kind, phases, args.timeout_s, args.seed,
                                             args.protocol))
    after = target.counters()
    end = asyncio.run(final_check(url, http, sampler, score_kind, args.timeout_s, args.recover_s, args.protocol))
    end["crashed"] = rss.server_gone or not end["live"]
    report = {"meta": meta, "capacity": capacity, "unloaded": unloaded, "soak": {**tally.summary(), "rates": rates},
              "memory": rss.summary(), "server": end,
              "triton_counters": model_deltas(before, after) if before and after else {}}
    report["problems"] = verdict(report)
    report["goals"] = goals(report, phases, tally.per_second)

    folder = results.new_folder(args.out, "soak", meta["hardware"], name=args.name)
    results.write(folder, report, markdown(report), stem="report", echo=False)
    return folder, report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
