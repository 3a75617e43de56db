"""`make perf-vs-bench`: make bench's client (loadtest/bench.py) and perf_analyzer (make perf) on the
same server in one run, level by level, and whether they agree on throughput.

  python -m loadtest.perf_vs_bench                        # starts tritonserver on model_repository/
  python -m loadtest.perf_vs_bench --grpc-url HOST:8001   # a server that already runs

At each concurrency level, bench's closed loop (asyncio gRPC, --duration-s after --warmup-s) runs, then
perf_analyzer's (synchronous gRPC, one thread per in-flight request, its stable windows), both with
distinct fresh-label requests from loadtest/data/workload.json. They agree when perf_analyzer's
requests/s is within --tolerance of bench's. Where they do not, the report lists what was measured to
differ between the two runs: labels per request (the work per request), Triton's own time per request,
the clients' CPU time per request (they share the host with the server), response-cache hits. No request
is sent twice in the run, by either client.
Writes comparison.md/.json, perf_analyzer.csv, bench.md and perf.md under
loadtest/results/perf-vs-bench-.../.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from loadtest import bench, perf
from loadtest.perf_data import UnrepeatedSampler
from loadtest.perf_tools import ToolError
from loadtest.server_metrics import model_deltas, scrape
from loadtest.workload import Workload

TOLERANCE = 0.15


def relative_gap(a: float, b: float) -> float:
    """|a - b| relative to the smaller one (inf where one is 0 and the other is not)."""
    low = min(abs(a), abs(b))
    return 0.0 if a == b else abs(a - b) / low if low else float("inf")


def differences(bench_level: dict, perf_level: dict, cores: int, tolerance: float) -> list[str]:
    """What was measured to differ by more than `tolerance` between the two clients' runs of a level."""
    found = []
    facts = [
        ("labels per request (work per request)", bench_level["labels_per_request"],
         perf_level["labels_per_request"], "{:.2f}"),
        ("Triton's time per request", bench_level["server_ms"], perf_level["server_ms"], "{:.1f} ms"),
        (f"client CPU per request (the client shares the {cores} cores with the server)",
         bench_level["client_cpu_ms_per_request"], perf_level["client_cpu_ms_per_request"], "{:.2f} ms"),
        ("p50 latency", bench_level["p50_ms"], perf_level["p50_ms"], "{:.1f} ms"),
    ]
    for name, ours, theirs, unit in facts:
        if relative_gap(ours, theirs) > tolerance:
            found.append(f"{name}: bench {unit.format(ours)}, perf_analyzer {unit.format(theirs)}")
    bench_hits, perf_hits = bench_level["cache_hits"], perf_level["cache_hits"]
    if bench_hits or perf_hits:
        found.append(f"response-cache hits: bench {bench_hits}, perf_analyzer {perf_hits}")
    errors = sum(bench_level["errors"].values())
    if errors or bench_level["wrong"]:
        found.append(f"bench had {errors} errors and {bench_level['wrong']} wrong answers")
    return found


def compare(bench_level: dict, perf_level: dict, cores: int, tolerance: float = TOLERANCE) -> dict:
    ratio = perf_level["requests_per_s"] / bench_level["requests_per_s"] if bench_level["requests_per_s"] \
        else float("inf")
    agree = abs(ratio - 1) <= tolerance
    why = differences(bench_level, perf_level, cores, tolerance)
    if not agree and not why:
        why = ["no measured cause: the clients measure different windows (bench a fixed duration, perf_analyzer "
               "its last three stable windows), one after the other, on a host other work may share"]
    return {"concurrency": bench_level["concurrency"], "bench_requests_per_s": bench_level["requests_per_s"],
            "perf_requests_per_s": perf_level["requests_per_s"], "ratio": ratio, "agree": agree,
            "differences": why}


def measure_bench(grpc_url: str, metrics_url: str, level: int, sampler, score_kind: str, args) -> dict:
    """bench.measure_level, plus what the comparison needs: the client's CPU time and the requests Triton
    received over the whole level (warm-up included), its cache hits and labels per request."""
    before, cpu_before = scrape(metrics_url), time.process_time()
    row = bench.measure_level(grpc_url, metrics_url, level, sampler, score_kind, args)
    cpu_s = time.process_time() - cpu_before
    ensemble = model_deltas(before, scrape(metrics_url)).get("zero_shot", {})
    received = ensemble.get("requests", 0.0) + ensemble.get("failures", 0.0)
    return {**row, "cache_hits": int(ensemble.get("cache_hits", 0)),
            "labels_per_request": row["pairs_per_s"] / row["requests_per_s"] if row["requests_per_s"] else 0.0,
            "client_cpu_ms_per_request": cpu_s * 1e3 / max(1.0, received)}


def markdown(meta: dict, rows: list[dict], bench_levels: list[dict], perf_levels: list[dict], cores: int,
             tolerance: float) -> str:
    agreed = sum(row["agree"] for row in rows)
    lines = [f"# bench vs perf_analyzer {meta['started']}", "",
             f"Same server, same run, level by level (bench first). bench: {meta['bench']}. perf_analyzer: "
             f"{perf.conditions(meta)}.", "",
             f"**{agreed} of {len(rows)} levels agree within {tolerance:.0%} on requests/s.**", "",
             "| concurrency | bench req/s | perf_analyzer req/s | perf_analyzer / bench | agree | bench p50 ms "
             "| perf_analyzer p50 ms | Triton ms/request (bench, perf_analyzer) | client CPU ms/request "
             "(bench, perf_analyzer) | labels/request (bench, perf_analyzer) | cache hits (bench, perf_analyzer) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row, ours, theirs in zip(rows, bench_levels, perf_levels):
        lines.append(
            f"| {row['concurrency']} | {row['bench_requests_per_s']:.1f} | {row['perf_requests_per_s']:.1f} "
            f"| {row['ratio']:.2f} | {'yes' if row['agree'] else '**no**'} | {ours['p50_ms']:.1f} "
            f"| {theirs['p50_ms']:.1f} | {ours['server_ms']:.1f}, {theirs['server_ms']:.1f} "
            f"| {ours['client_cpu_ms_per_request']:.2f}, {theirs['client_cpu_ms_per_request']:.2f} "
            f"| {ours['labels_per_request']:.2f}, {theirs['labels_per_request']:.2f} "
            f"| {ours['cache_hits']}, {theirs['cache_hits']} |")
    lines += ["", "Triton ms/request: Triton's counters for `zero_shot` (arrival to response) over each client's "
              "measured span; client CPU: the client process's CPU time over the level (warm-up and unstable "
              f"windows included) per request Triton received; the host has {cores} cores."]
    differing = [row for row in rows if not row["agree"]]
    if differing:
        lines += ["", "## Where they differ", ""]
        for row in differing:
            lines.append(f"- concurrency {row['concurrency']} (perf_analyzer / bench = {row['ratio']:.2f}): "
                         + "; ".join(row["differences"]) + ".")
    return "\n".join(lines) + "\n"


def run(args) -> tuple[Path, list[dict]]:
    tool, levels = perf.prepare(args)
    server, target = perf.start_server(args.repository) if not args.grpc_url else (None, perf.target_from(args))
    cores = os.cpu_count() or 1
    bench_levels, perf_levels, error = [], [], ""
    try:
        served = target.export_info()
        score_kind = "cosine" if served.get("mode") == "embedding" else "probabilities"
        workload = Workload.load(args.workload)
        perf_sampler = workload.sampler(args.label_mode, "", "", seed=args.seed, distinct=True)
        settings = perf.settings_from(args, "grpc")
        meta = perf.run_meta(args, served, perf_sampler, tool, settings, server is not None)
        meta["bench"] = (f"closed-loop asyncio gRPC client (zsc_client), {args.duration_s:g} s per level after "
                         f"{args.warmup_s:g} s warm-up, every answer checked")
        folder = perf.results_folder(args.out, "perf-vs-bench", meta)
        sweep = perf.PerfSweep(tool, target, settings, perf_sampler, score_kind, folder)
        # the same mix for both clients, and no request of one repeats any of the other's
        bench_sampler = UnrepeatedSampler(workload.sampler(args.label_mode, "", "", seed=args.seed + 1,
                                                           distinct=True), sweep.seen)
        for level in levels:
            bench_levels.append(measure_bench(target.grpc_url, target.metrics_url, level, bench_sampler,
                                              score_kind, args))
            try:
                perf_levels.append(sweep.measure(level))
            except perf.PerfError as exc:
                error = str(exc)
                bench_levels.pop()
                break
    finally:
        if server is not None:
            server.stop()
    rows = [compare(ours, theirs, cores, args.tolerance) for ours, theirs in zip(bench_levels, perf_levels)]
    bench_meta = {**meta, "duration_s": args.duration_s, "warmup_s": args.warmup_s}
    (folder / "bench.md").write_text(bench.markdown(bench_meta, bench_levels, None), encoding="utf-8")
    perf.write_results(folder, meta, perf_levels, sweep.csv_lines, error)
    (folder / "results.md").rename(folder / "perf.md")
    (folder / "results.json").rename(folder / "perf.json")
    table = markdown(meta, rows, bench_levels, perf_levels, cores, args.tolerance)
    if error:
        table += f"\n**Stopped: {error}**\n"
    (folder / "comparison.md").write_text(table, encoding="utf-8")
    (folder / "comparison.json").write_text(json.dumps(
        {"meta": meta, "tolerance": args.tolerance, "levels": rows, "bench": bench_levels, "error": error},
        indent=2, default=str) + "\n", encoding="utf-8")
    print(table)
    print(f"[perf-vs-bench] results in {folder}")
    if error:
        raise perf.PerfError(error)
    return folder, rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.perf_vs_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    perf.add_perf_arguments(parser)
    parser.add_argument("--duration-s", type=float, default=20.0, help="bench: per level (default: 20)")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="bench: before each level (default: 3)")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="bench: per request (default: 60)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="largest relative gap in requests/s that counts as agreement (default: 0.15)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (OSError, ValueError, ToolError, perf.PerfError) as exc:
        print(f"perf-vs-bench: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

