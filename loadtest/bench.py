"""`make bench`: the full ensemble (tokenization included) under a concurrency sweep, with the raw
encoder ceiling measured in the same run for comparison.

  python -m loadtest.bench                                   # starts tritonserver on model_repository/
  python -m loadtest.bench --grpc-url HOST:8001 --http-url HOST:8000   # a server that already runs

Each concurrency level runs N asyncio workers, each sending its next request as soon as the previous
answer arrives (closed loop, gRPC, zsc_client.AsyncZeroShotClient), drawing texts and label sets from
loadtest/data/workload.json. Every answer is checked against the request it answers. Then the encoder
model alone is driven with pre-tokenized pairs at the highest concurrency: the ceiling the ensemble's
tokenization and post-processing are measured against. Triton's per-model counters say where the time
goes. Prints one table and writes results.json + results.md under loadtest/results/bench-.../.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from loadtest import server_cpu
from loadtest.run import RESULTS, hardware, slug
from loadtest.server_metrics import NvidiaSmiSampler, label_cache_summary, model_deltas, scrape
from loadtest.target import Target
from loadtest.workload import DEFAULT_WORKLOAD, LABEL_MODES, Workload, answer_problem
from zsc_client import AsyncZeroShotClient, ZeroShotClientError

CONCURRENCY = (1, 5, 10, 32, 64, 128)
STAGES = ("preprocess", "encoder", "postprocess")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="exported repository to serve (ignored with --grpc-url)")
    parser.add_argument("--grpc-url", default="", help="benchmark a running server instead of starting one")
    parser.add_argument("--http-url", default="", help="its HTTP endpoint (configs, statistics); with --grpc-url")
    parser.add_argument("--metrics-url", default="", help="its Prometheus endpoint (default: HTTP host, port 8002)")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                        help="comma-separated in-flight request counts (default: %(default)s)")
    parser.add_argument("--duration-s", type=float, default=20.0, help="per concurrency level (default: 20)")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="before each level, not measured (default: 3)")
    parser.add_argument("--ceiling-s", type=float, default=10.0, help="raw encoder run (0: skip; default: 10)")
    parser.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    parser.add_argument("--label-mode", choices=LABEL_MODES, default="fresh",
                        help="fresh (default): random label sets, so the response cache rarely answers and "
                             "the figures are compute; sets / fixed: repeated requests, cache hits included")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per request (default: 60)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results parent folder (default: %(default)s)")
    parser.add_argument("--note", default="", help="one line stored with the results (e.g. 'random weights')")
    return parser


async def closed_loop(url: str, concurrency: int, seconds: float, sampler, score_kind: str,
                      timeout_s: float) -> dict:
    """`concurrency` workers back to back for `seconds`; latencies of answers that match their request."""
    latencies, pairs, errors, wrong = [], 0, {}, 0
    async with AsyncZeroShotClient(url, "grpc", timeout_s=timeout_s) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal pairs, wrong
            while time.perf_counter() < deadline:
                request = sampler.next()
                started = time.perf_counter()
                try:
                    result = await client.classify(request.text, list(request.labels),
                                                   multi_label=request.multi_label)
                except ZeroShotClientError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                if (answer_problem(request, result.labels, result.scores, score_kind)
                        or result.text != request.text):
                    wrong += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1e3)
                pairs += len(request.labels)

        began, cpu_began = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, client_cpu = time.perf_counter() - began, time.process_time() - cpu_began
    return {"latencies_ms": latencies, "pairs": pairs, "errors": errors, "wrong": wrong, "elapsed_s": elapsed,
            "client_cpu_s": client_cpu}


async def tokenized_pairs(client, request) -> dict[str, np.ndarray]:
    """What the preprocess model makes of `request`: the encoder's inputs for its pairs (the ones the exported
    encoder takes: no token_type_ids for RoBERTa-family models)."""
    import tritonclient.grpc as grpcclient

    from zsc_client.request import build_inputs

    response = await client.infer("preprocess", build_inputs(grpcclient, request.text, list(request.labels),
                                                            None, request.multi_label))
    arrays = {name: response.as_numpy(name) for name in ("input_ids", "attention_mask", "token_type_ids")}
    return {name: array for name, array in arrays.items() if array is not None}


# Triton 2.51's dynamic batcher, when its queue has a policy (a size or time bound), can sleep its full
# 500 ms wait while the instance is free and requests queue, until the next request arrives: in a closed loop
# none arrives, so the queue stalls (docs/limits-failures-security.md, "Overload"). Answers this slow are
# counted as such stalls.
STALL_MS = 400


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
        arrays = await tokenized_pairs(client, request)
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
    latencies_ms.sort()
    return {"rows": int(rows), "sequence": int(sequence), "concurrency": concurrency,
            "requests": len(latencies_ms), "pairs_per_s": len(latencies_ms) * rows / elapsed,
            "p50_ms": latencies_ms[len(latencies_ms) // 2] if latencies_ms else None,
            "max_ms": latencies_ms[-1] if latencies_ms else None,
            "stalls": sum(latency >= STALL_MS for latency in latencies_ms),
            "refused": len(refused), "refusals": sorted(set(refused))[:3]}


def ensemble_ms(deltas: dict) -> float:
    """Triton's average time per zero_shot request (arrival to response, all three models and the
    hops between them) over a counters delta."""
    ensemble = deltas.get("zero_shot", {})
    return ensemble.get("request_us", 0.0) / (ensemble.get("requests") or float("nan")) / 1e3


def summarize(concurrency: int, run: dict, deltas: dict, gpu: dict, server_cpu: dict | None = None,
              label_cache: dict | None = None) -> dict:
    latencies = sorted(run["latencies_ms"])

    def percentile(q: float) -> float:
        return float(np.percentile(latencies, q)) if latencies else float("nan")

    compute = {stage: deltas.get(stage, {}).get("avg_compute_ms", float("nan")) for stage in STAGES}
    queue = {stage: deltas.get(stage, {}).get("avg_queue_ms", float("nan")) for stage in STAGES}
    busy = {stage: deltas.get(stage, {}).get("compute_infer_us", 0.0) + deltas.get(stage, {}).get(
        "compute_input_us", 0.0) + deltas.get(stage, {}).get("compute_output_us", 0.0) for stage in STAGES}
    total_busy = sum(busy.values()) or float("nan")
    return {
        "concurrency": concurrency, "requests": len(latencies), "errors": run["errors"], "wrong": run["wrong"],
        "p50_ms": percentile(50), "p95_ms": percentile(95), "p99_ms": percentile(99),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "requests_per_s": len(latencies) / run["elapsed_s"], "pairs_per_s": run["pairs"] / run["elapsed_s"],
        "compute_ms": compute, "queue_ms": queue,
        "host_share": (busy["preprocess"] + busy["postprocess"]) / total_busy,
        "encoder_avg_batch": deltas.get("encoder", {}).get("avg_batch", float("nan")),
        # rows the encoder ran per answered request: 1 + labels in embedding mode without the label cache,
        # about 1 with it (the text) once the labels are cached
        "encoder_rows_per_request": deltas.get("encoder", {}).get("inferences", 0.0) / max(1, len(latencies)),
        "label_cache": label_cache,
        "cache_hit_share": deltas.get("zero_shot", {}).get("cache_hits", 0.0) / max(1, len(latencies)),
        "server_ms": ensemble_ms(deltas),
        "gpu_memory_mb": gpu.get("memory_used_mb_max"),
        # CPU milliseconds per answered request, by process (tritonserver, each model's stubs) and for this
        # client: robust to other load on the machine, and what caps requests/s per core
        "server_cpu_ms": server_cpu,
        "client_cpu_ms": run["client_cpu_s"] * 1e3 / max(1, len(latencies)),
    }


def cpu_breakdown(rows: list[dict]) -> list[str]:
    """Server CPU ms per request by process, one row per level (empty for a server on another host)."""
    rows = [row for row in rows if row.get("server_cpu_ms")]
    if not rows:
        return []
    names = ["tritonserver", *STAGES] + (["fronts"] if any("fronts" in row["server_cpu_ms"] for row in rows) else [])
    lines = ["", "Server CPU ms per request, by process (/proc; tritonserver: gRPC, ensemble, batcher; fronts: the "
             "launcher's HTTP and gRPC fronts, when it runs them):", "",
             "| concurrency | " + " | ".join(names) + " | total | requests/s per server core |",
             "|---" * (len(names) + 3) + "|"]
    for row in rows:
        cpu = row["server_cpu_ms"]
        lines.append(f"| {row['concurrency']} | " + " | ".join(f"{cpu.get(name, 0.0):.2f}" for name in names)
                     + f" | {cpu['total']:.2f} | {1e3 / cpu['total'] if cpu['total'] else float('nan'):.0f} |")
    return lines


def label_cache_lines(rows: list[dict]) -> list[str]:
    """The label cache per level (embedding mode; nothing where the export has none)."""
    rows = [row for row in rows if row.get("label_cache")]
    if not rows:
        return []
    lines = ["", "Label cache (embedding mode; every preprocess instance together):", "",
             "| concurrency | hits | misses (encoded) | hit share | evictions | entries at the end | MiB held | "
             "MiB budget |", "|---" * 8 + "|"]
    for row in rows:
        cache = row["label_cache"]
        lines.append(f"| {row['concurrency']} | {cache['hits']:.0f} | {cache['misses']:.0f} | "
                     f"{cache['hit_share']:.1%} | {cache['evictions']:.0f} | {cache['entries']:.0f} | "
                     f"{cache['bytes'] / 2**20:.2f} | {cache['budget_bytes'] / 2**20:.0f} |")
    return lines


def markdown(meta: dict, rows: list[dict], ceiling: dict | None) -> str:
    conditions = (f"{meta['model']} ({meta['note'] or 'weights as exported'}), {meta['runtime']}, "
                  f"{meta['precision']}, max_length {meta['max_length']}, {meta['hardware']}; workload "
                  f"{meta['workload']} ({meta['label_mode']} labels, {meta['mean_labels']:.1f} labels/request on "
                  f"average), {meta['duration_s']:.0f} s per level after {meta['warmup_s']:.0f} s warm-up, "
                  f"closed-loop async gRPC client on the same host, full ensemble (tokenization included)")
    lines = [f"# Benchmark {meta['started']}", "", conditions, "",
             "| concurrency | p50 ms | p95 ms | p99 ms | req/s | pairs/s | errors | wrong | encoder batch "
             "| encoder rows/req | tokenize+post share | cache hits | label cache hits | GPU MB | server CPU ms/req "
             "| client CPU ms/req |",
             "|---" * 16 + "|"]
    for row in rows:
        memory = f"{row['gpu_memory_mb']:.0f}" if row["gpu_memory_mb"] else "n/a"
        cpu = f"{row['server_cpu_ms']['total']:.2f}" if row.get("server_cpu_ms") else "n/a"
        label_cache = f"{row['label_cache']['hit_share']:.0%}" if row.get("label_cache") else "off"
        lines.append(f"| {row['concurrency']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} "
                     f"| {row['requests_per_s']:.1f} | {row['pairs_per_s']:.0f} | {sum(row['errors'].values())} "
                     f"| {row['wrong']} | {row['encoder_avg_batch']:.1f} | {row['encoder_rows_per_request']:.1f} "
                     f"| {row['host_share']:.0%} | {row['cache_hit_share']:.0%} | {label_cache} | {memory} | {cpu} "
                     f"| {row['client_cpu_ms']:.2f} |")
    lines += cpu_breakdown(rows) + label_cache_lines(rows)
    if ceiling:
        best = max(rows, key=lambda row: row["pairs_per_s"])
        lines += ["", f"Raw encoder ceiling (same server, same run): {ceiling['pairs_per_s']:.0f} pairs/s with "
                  f"{ceiling['rows']} pre-tokenized pairs of {ceiling['sequence']} tokens per request at "
                  f"concurrency {ceiling['concurrency']}. Full ensemble best: {best['pairs_per_s']:.0f} pairs/s "
                  f"({best['pairs_per_s'] / ceiling['pairs_per_s']:.0%} of the ceiling) at concurrency "
                  f"{best['concurrency']}."]
        if ceiling.get("max_ms") is not None:
            lines += ["", f"Raw encoder latency: p50 {ceiling['p50_ms']:.1f} ms, max {ceiling['max_ms']:.1f} ms; "
                      f"{ceiling['stalls']} answers took ≥ {STALL_MS} ms (the dynamic batcher's stall, see "
                      f"docs/limits-failures-security.md), {ceiling['refused']} refused "
                      f"{'; '.join(ceiling['refusals'])}."]
    lines += ["", "tokenize+post share: preprocess + postprocess compute time over all three models' compute "
              "time (Triton's counters); encoder batch: pairs per encoder execution; encoder rows/req: rows the "
              "encoder ran per answered request (embedding mode: 1 + labels without the label cache, the text "
              "alone when the labels are cached); cache hits: Triton's response cache; label cache hits: "
              "hypotheses whose embedding came from the label cache."]
    return "\n".join(lines) + "\n"


def served_conditions(served: dict, workload: Path, label_mode: str, sampler) -> dict:
    """The conditions every benchmark report states: what the server serves, on what, with which requests."""
    return {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "hardware": hardware(),
            "model": served.get("source", "unknown"), "runtime": served.get("runtime", "unknown"),
            "precision": served.get("precision", "unknown"), "max_length": served.get("max_length"),
            "workload": Path(workload).name, "label_mode": label_mode, "mean_labels": sampler.mean_labels()}


def measure_level(grpc_url: str, metrics_url: str, level: int, sampler, score_kind: str, args,
                  server_pid: int | None = None) -> dict:
    """One concurrency level: args.warmup_s unmeasured, then args.duration_s measured with Triton's counters,
    nvidia-smi and (for a local server, `server_pid`) the server's CPU time by process around it."""
    asyncio.run(closed_loop(grpc_url, level, args.warmup_s, sampler, score_kind, args.timeout_s))
    before, cpu_before = scrape(metrics_url), server_cpu.snapshot(server_pid) if server_pid else None
    with NvidiaSmiSampler() as gpu:
        result = asyncio.run(closed_loop(grpc_url, level, args.duration_s, sampler, score_kind, args.timeout_s))
    cpu = server_cpu.per_request_ms(cpu_before, server_cpu.snapshot(server_pid),
                                    len(result["latencies_ms"])) if server_pid else None
    after = scrape(metrics_url)
    deltas = model_deltas(before, after)
    row = summarize(level, result, deltas, gpu.summary(), cpu, label_cache_summary(deltas, after))
    print(f"[bench] concurrency {level}: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
          f"{row['requests_per_s']:.1f} req/s, {row['pairs_per_s']:.0f} pairs/s, "
          f"{sum(row['errors'].values())} errors, {row['wrong']} wrong", flush=True)
    return row


def run(args) -> Path:
    from zsc_server.triton_process import TritonServer, free_ports

    levels = [int(part) for part in args.concurrency.split(",") if part.strip()]
    server = None
    if not args.grpc_url:
        http, grpc, metrics = free_ports(3)
        print(f"[bench] starting tritonserver on {args.repository}", flush=True)
        server = TritonServer(args.repository, http, grpc, metrics).__enter__()
    target = Target.of_server(server) if server else Target.from_urls(args.grpc_url, args.http_url, args.metrics_url)
    args.grpc_url = target.grpc_url
    # CPU accounting needs the server's processes: ours, or a local one found by its gRPC port
    server_pid = server.process.pid if server is not None else target.local_server_pid()
    metrics_url = target.metrics_url
    try:
        served = target.export_info()
        sampler = Workload.load(args.workload).sampler(args.label_mode, "", "", distinct=True)  # no cache hits
        score_kind = "cosine" if served.get("mode") == "embedding" else "probabilities"
        meta = {**served_conditions(served, args.workload, args.label_mode, sampler),
                "duration_s": args.duration_s, "warmup_s": args.warmup_s, "note": args.note}
        rows = [measure_level(args.grpc_url, metrics_url, level, sampler, score_kind, args, server_pid)
                for level in levels]
        ceiling = None
        if args.ceiling_s > 0:
            typical = min((sampler.next() for _ in range(200)),
                          key=lambda request: abs(len(request.labels) - meta["mean_labels"]))
            ceiling = asyncio.run(encoder_ceiling(args.grpc_url, max(levels), args.ceiling_s, typical,
                                                  args.timeout_s))
            print(f"[bench] raw encoder: {ceiling['pairs_per_s']:.0f} pairs/s, {ceiling['stalls']} answers "
                  f"≥ {STALL_MS} ms, {ceiling['refused']} refused", flush=True)
    finally:
        if server is not None:
            server.stop()
    folder = args.out / "-".join(["bench", datetime.now().strftime("%Y%m%d-%H%M%S"), slug(meta["hardware"]),
                                  slug(meta["runtime"]), slug(meta["precision"])])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"meta": meta, "levels": rows, "encoder_ceiling": ceiling},
                                                    indent=2) + "\n", encoding="utf-8")
    table = markdown(meta, rows, ceiling)
    (folder / "results.md").write_text(table, encoding="utf-8")
    print(table)
    print(f"[bench] results in {folder}")
    return folder


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        folder = run(args)
    except (OSError, ValueError, ZeroShotClientError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    rows = json.loads((folder / "results.json").read_text())["levels"]
    return 1 if any(row["wrong"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
