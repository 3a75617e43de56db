"""`make bench-label-cache`: what the label cache buys in embedding mode, measured against the same model
without it, in one run.

Exports the model twice (--label-cache-mb 0, and the default budget), serves both at once and, case by
case, drives one then the other with the same closed loop (asyncio gRPC workers, loadtest.bench):
- fixed label sets of 5 and 10 labels (every hypothesis cached after the first requests);
- the same with half the requests carrying one fresh label (never seen: one miss, one BLS call).
Texts are the workload's with a running number appended, so no two requests are alike and Triton's
response cache never answers (its hits are reported, and should be 0). Each case warms up first (not
measured): the cache then holds the fixed set, as it does after the first requests of the day.

Reports requests/s, p50 and p95 with the cache off and on and their ratios, with the encoder's rows per
request (1 + labels off, about 1 on), the label cache's hit share and the server's CPU per request, and
the conditions next to the figures. Results: loadtest/results/label-cache-<date>-<hardware>/results.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from loadtest import bench, server_cpu
from loadtest.run import RESULTS, hardware, slug
from loadtest.server_metrics import label_cache_summary, model_deltas, scrape
from loadtest.target import Target
from loadtest.workload import DEFAULT_WORKLOAD, ClassifyRequest, Workload
from zsc_server.batching_policy import LABEL_CACHE_MIB

SETTINGS = ("off", "on")


class DistinctRequests:
    """Workload texts made distinct with a number that runs across every sampler of the run (a text is never
    sent twice, whatever the case); the first `labels` labels of the pool, and in every second request
    (with `fresh`) the last of them replaced by a label never sent before."""

    numbers = itertools.count()

    def __init__(self, workload: Workload, labels: int, fresh: bool) -> None:
        if labels > len(workload.label_pool):
            raise ValueError(f"{labels} labels asked for; the workload's pool has {len(workload.label_pool)}")
        self.texts, self.pool = workload.texts, workload.label_pool
        self.labels, self.fresh = tuple(workload.label_pool[:labels]), fresh
        self.run = uuid.uuid4().hex[:6]  # servers given by repository may have answered an earlier run

    def next(self) -> ClassifyRequest:
        n = next(self.numbers)
        labels = self.labels
        if self.fresh and n % 2:
            labels = (*labels[:-1], f"{self.pool[n % len(self.pool)]}{self.run}-{n}")
        return ClassifyRequest(f"{self.texts[n % len(self.texts)]} #{self.run}-{n}", labels)

    def mean_labels(self) -> float:
        return float(len(self.labels))


def cases(label_counts: list[int]) -> list[tuple[int, bool]]:
    return [(labels, fresh) for labels in label_counts for fresh in (False, True)]


def case_name(labels: int, fresh: bool) -> str:
    return f"{labels} labels" + (", half with a fresh label" if fresh else ", fixed set")


def export(model: str, repository: Path, **options) -> Path:
    from export.options import ExportOptions
    from export.pipeline import export_model

    return export_model(ExportOptions(model=model, repository=repository, gpu="none", **options))


def measure(server, sampler, concurrency: int, duration_s: float, warmup_s: float, timeout_s: float) -> dict:
    """One closed loop against `server` after a warm-up: latencies, throughput, and the server's counters."""
    metrics_url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    asyncio.run(bench.closed_loop(server.grpc_url, concurrency, warmup_s, sampler, "cosine", timeout_s))
    before, cpu_before = scrape(metrics_url), server_cpu.snapshot(server.process.pid)
    run = asyncio.run(bench.closed_loop(server.grpc_url, concurrency, duration_s, sampler, "cosine", timeout_s))
    after = scrape(metrics_url)
    answered = len(run["latencies_ms"])
    cpu = server_cpu.per_request_ms(cpu_before, server_cpu.snapshot(server.process.pid), answered)
    deltas = model_deltas(before, after)
    row = bench.summarize(concurrency, run, deltas, {}, cpu, label_cache_summary(deltas, after))
    row["response_cache_hits"] = deltas.get("zero_shot", {}).get("cache_hits", 0.0)
    return row


def markdown(meta: dict, results: list[dict]) -> str:
    lines = [f"# Label cache, off vs on {meta['started']}", "",
             f"{meta['model']} (embedding mode), python-ort FP32, max_length {meta['max_length']}, {meta['hardware']}; "
             f"label cache on: {meta['budget_mib']:g} MiB per preprocess instance, {meta['preprocess_instances']} "
             f"instances; closed-loop async gRPC client on the same host at concurrency {meta['concurrency']}, "
             f"{meta['duration_s']:g} s per case and setting after {meta['warmup_s']:g} s of warm-up; both servers "
             f"up together, driven one after the other case by case; distinct texts (response cache hits: "
             f"{meta['response_cache_hits']:.0f}).", "",
             "| case | req/s off | req/s on | req/s on/off | p50 ms off | p50 ms on | p50 off/on | p95 ms off | "
             "p95 ms on | encoder rows/req off | on | label cache hits | server CPU ms/req off | on | errors | wrong |",
             "|---" * 16 + "|"]
    for result in results:
        off, on = result["off"], result["on"]
        cpu_off = off["server_cpu_ms"]["total"] if off.get("server_cpu_ms") else float("nan")
        cpu_on = on["server_cpu_ms"]["total"] if on.get("server_cpu_ms") else float("nan")
        hits = f"{on['label_cache']['hit_share']:.1%}" if on.get("label_cache") else "n/a"
        errors = sum(off["errors"].values()) + sum(on["errors"].values())
        lines.append(
            f"| {result['case']} | {off['requests_per_s']:.1f} | {on['requests_per_s']:.1f} | "
            f"{on['requests_per_s'] / off['requests_per_s'] if off['requests_per_s'] else float('nan'):.2f}× | "
            f"{off['p50_ms']:.1f} | {on['p50_ms']:.1f} | "
            f"{off['p50_ms'] / on['p50_ms'] if on['p50_ms'] else float('nan'):.2f}× | {off['p95_ms']:.1f} | "
            f"{on['p95_ms']:.1f} | {off['encoder_rows_per_request']:.2f} | {on['encoder_rows_per_request']:.2f} | "
            f"{hits} | {cpu_off:.2f} | {cpu_on:.2f} | {errors} | {off['wrong'] + on['wrong']} |")
    lines += ["", "req/s on/off: throughput with the cache over without (higher is better); p50 off/on: median "
              "latency without over with (higher is better); encoder rows/req: rows the encoder ran per answered "
              "request (1 + labels without the cache); label cache hits: hypotheses answered from the cache.", ""]
    return "\n".join(lines)


def run(args) -> Path:
    from zsc_server.triton_process import TritonServer, free_ports

    workload = Workload.load(args.workload)
    label_counts = [int(part) for part in args.label_counts.split(",") if part.strip()]
    started = datetime.now(timezone.utc)
    with contextlib.ExitStack() as stack:
        repositories = {"off": args.repository_off, "on": args.repository_on}
        if not all(repositories.values()):
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zsc-label-cache-")))
            repositories = {"off": export(args.model, tmp / "off", max_length=args.max_length, label_cache_mb=0),
                            "on": export(args.model, tmp / "on", max_length=args.max_length,
                                         label_cache_mb=args.label_cache_mb)}
        servers = {}
        for setting in SETTINGS:
            http, grpc, metrics = free_ports(3)
            print(f"[label-cache] serving {repositories[setting]} (cache {setting})", flush=True)
            servers[setting] = stack.enter_context(TritonServer(repositories[setting], http, grpc, metrics))
        served = Target.of_server(servers["on"]).export_info()
        on_config = json.loads((Path(repositories["on"]) / "encoder" / "export.json").read_text(encoding="utf-8"))
        results = []
        for labels, fresh in cases(label_counts):
            result = {"case": case_name(labels, fresh), "labels": labels, "fresh_label_share": 0.5 if fresh else 0.0}
            for setting in SETTINGS:
                sampler = DistinctRequests(workload, labels, fresh)
                result[setting] = measure(servers[setting], sampler, args.concurrency, args.duration_s,
                                          args.warmup_s, args.timeout_s)
                row = result[setting]
                print(f"[label-cache] {result['case']}, cache {setting}: {row['requests_per_s']:.1f} req/s, "
                      f"p50 {row['p50_ms']:.1f} ms, {row['encoder_rows_per_request']:.2f} encoder rows/request, "
                      f"{sum(row['errors'].values())} errors, {row['wrong']} wrong", flush=True)
            results.append(result)
        instances = preprocess_instances(Path(repositories["on"]))
    meta = {"started": started.isoformat(timespec="seconds"), "hardware": hardware(),
            "model": served.get("source", args.model), "max_length": served.get("max_length"),
            "budget_mib": on_config.get("label_cache_bytes", 0) / 2**20, "preprocess_instances": instances,
            "concurrency": args.concurrency, "duration_s": args.duration_s, "warmup_s": args.warmup_s,
            "workload": args.workload.name, "label_counts": label_counts,
            "response_cache_hits": sum(r[s]["response_cache_hits"] for r in results for s in SETTINGS)}
    folder = args.out / f"label-cache-{started.astimezone().strftime('%Y%m%d-%H%M%S')}-{slug(meta['hardware'])}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"meta": meta, "cases": results}, indent=2) + "\n",
                                         encoding="utf-8")
    report = markdown(meta, results)
    (folder / "results.md").write_text(report, encoding="utf-8")
    print(report)
    print(f"[label-cache] results in {folder}")
    return folder


def preprocess_instances(repository: Path) -> int:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((repository / "preprocess" / "config.pbtxt").read_text(encoding="utf-8"),
                               model_config_pb2.ModelConfig())
    return sum(group.count for group in config.instance_group)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.label_cache_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="offline-minilm", help="an embedding-mode checkpoint (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--label-cache-mb", type=float, default=LABEL_CACHE_MIB,
                        help="budget per preprocess instance with the cache on (default: %(default)s, the export's)")
    parser.add_argument("--repository-off", type=Path, default=None,
                        help="an exported repository without the cache (with --repository-on: no export)")
    parser.add_argument("--repository-on", type=Path, default=None, help="the same model with the cache")
    parser.add_argument("--label-counts", default="5,10", help="fixed label set sizes (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: %(default)s)")
    parser.add_argument("--duration-s", type=float, default=20.0, help="per case and setting (default: 20)")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="before each, not measured (default: 3)")
    parser.add_argument("--timeout-s", type=float, default=60.0, help="per request (default: 60)")
    parser.add_argument("--workload", type=Path, default=DEFAULT_WORKLOAD)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results parent folder (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.repository_off) != bool(args.repository_on):
        print("label-cache bench: give both --repository-off and --repository-on, or neither", file=sys.stderr)
        return 2
    folder = run(args)
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))["cases"]
    failed = any(r[s]["wrong"] or sum(r[s]["errors"].values()) for r in results for s in SETTINGS)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
