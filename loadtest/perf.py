"""`make perf`: perf_analyzer, Triton's own benchmark client, through the full ensemble (`zero_shot`,
tokenization included) under a concurrency sweep, with distinct requests; its CSV is kept beside the
other reports.

  python -m loadtest.perf                                    # starts tritonserver on model_repository/
  python -m loadtest.perf --grpc-url HOST:8001               # a server that already runs (HTTP: HOST:8000)

Each concurrency level is one perf_analyzer run (`--concurrency-range N:N`; its synchronous client, one
thread per in-flight request; time windows of --interval-ms until three agree within --stability-pct),
so that Triton's counters (requests, failures, response-cache hits) are read per level. Its input data
are requests drawn from loadtest/data/workload.json, none sent twice in the run: the response cache
answers a repeated request without computing it. perf_analyzer walks its input data in order and starts
over at the end, and keeps a copy of it per in-flight request, so each level gets as many distinct
requests as it can send (sized from the previous level's rate); a level that sent more than it was given
is run again with more. Every answer of the measured windows is checked against its request (from
perf_analyzer's profile export), as make bench and the Locust scenario check theirs. Writes
perf_analyzer.csv (perf_analyzer's -f CSV, one row per level), results.json and results.md under
loadtest/results/perf-.../.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loadtest import results
from loadtest.driver import CONCURRENCY, parse_levels
from loadtest.perf_data import MODEL, check_answers, input_data, read_csv
from loadtest.perf_tools import DEFAULT_DIR, PerfAnalyzer, ToolError, locate
from loadtest.server import Target, serve
from loadtest.server_metrics import model_deltas
from loadtest.workload import Workload, score_kind_of
from zsc_server.arguments import positive, positive_int
from zsc_server.triton_errors import RESTRICTED

# perf_analyzer holds its input data once per in-flight request (about 2 KB per request each, measured
# with 2.51): distinct requests x concurrency is capped so that a level at 128 stays near 1 GB.
DATA_COPIES_CAP = 500_000


class PerfError(RuntimeError):
    """perf_analyzer failed, or a level could not be measured with distinct requests."""


@dataclasses.dataclass(frozen=True)
class Settings:
    protocol: str = "grpc"
    interval_ms: int = 5000
    stability_pct: float = 10.0
    max_trials: int = 10
    min_requests: int = 2000  # input size of the first level, and the least any level gets

    def flags(self) -> list[str]:
        return ["-i", self.protocol, "--measurement-interval", str(self.interval_ms),
                "--stability-percentage", f"{self.stability_pct:g}", "--max-trials", str(self.max_trials)]


class PerfSweep:
    """perf_analyzer runs against one server, one per concurrency level, none repeating a request."""

    def __init__(self, tool: PerfAnalyzer, target: Target, settings: Settings, sampler, score_kind: str,
                 log_dir: Path):
        self.tool, self.target, self.settings, self.sampler = tool, target, settings, sampler
        self.score_kind, self.log_dir = score_kind, log_dir
        self.rate_per_slot: float | None = None  # requests/s per in-flight request, from the last level
        self.csv_lines: list[str] = []  # perf_analyzer's header, then one row per level

    def input_size(self, concurrency: int, windows: int) -> int:
        """Distinct requests for a level that runs up to `windows` measurement windows: what it can send
        if throughput grows at most in proportion to concurrency (a closed loop's does: latency does not
        fall as requests are added), with a margin."""
        expected = 0.0
        if self.rate_per_slot is not None:
            expected = self.rate_per_slot * concurrency * self.settings.interval_ms / 1e3 * windows * 1.25
        size = max(self.settings.min_requests, math.ceil(expected) + 2 * concurrency)
        return min(size, max(DATA_COPIES_CAP // concurrency, 8 * concurrency))

    def run_once(self, concurrency: int, size: int, scratch: Path) -> tuple[dict, list[str]]:
        """One perf_analyzer run at `concurrency` on `size` distinct requests: the level, its CSV's lines."""
        requests = [self.sampler.next() for _ in range(size)]  # distinct: each ends in a tag of its own
        data, csv_path, profile = scratch / "input.json", scratch / "level.csv", scratch / "profile.json"
        for earlier in (csv_path, profile):  # an earlier attempt's: perf_analyzer refuses to overwrite them
            earlier.unlink(missing_ok=True)
        data.write_text(json.dumps(input_data(requests), ensure_ascii=False), encoding="utf-8")
        command = [str(self.tool.binary), "-m", MODEL, "-u", self.target.url(self.settings.protocol),
                   *self.settings.flags(), *self.target.header_flags(self.settings.protocol),
                   "--input-data", str(data),
                   "--concurrency-range", f"{concurrency}:{concurrency}", "-f", str(csv_path),
                   "--profile-export-file", str(profile)]
        before, cpu_before = self.target.counters(), resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(command, env=self.tool.env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        deltas = model_deltas(before, self.target.counters())
        log = self.log_dir / f"perf_analyzer-c{concurrency}.log"
        log.write_text(" ".join(command) + "\n\n" + done.stdout + done.stderr, encoding="utf-8")
        if done.returncode != 0 or not csv_path.is_file():
            printed = (done.stdout + done.stderr).strip().splitlines()
            errors = [line for line in printed if "error" in line.lower()]  # not the usage text that follows
            tail = "\n".join(errors[:6] or printed[-6:])
            hint = ("; raise --interval-ms or --stability-pct (PERF_INTERVAL_MS, PERF_STABILITY)"
                    if "stable measurement" in tail else "")
            raise PerfError(f"perf_analyzer failed at concurrency {concurrency} (exit {done.returncode}; "
                            f"log: {log}{hint}):\n{tail}")
        ensemble, [row] = deltas.get(MODEL, {}), read_csv(csv_path)
        sent = int(ensemble.get("requests", 0) + ensemble.get("failures", 0))
        check = check_answers(json.loads(profile.read_text(encoding="utf-8", errors="surrogateescape")),
                              self.score_kind)
        labels_per_request = check.labels / check.checked if check.checked else float("nan")
        server_compute_us = sum(row.get(f"Server Compute {part}", 0.0) for part in ("Input", "Infer", "Output"))
        client_cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
        return {
            "concurrency": concurrency, "distinct_requests": size, "sent": sent, "ran_out_of_data": sent > size,
            "failures": int(ensemble.get("failures", 0)), "cache_hits": int(ensemble.get("cache_hits", 0)),
            "requests_per_s": row["Inferences/Second"], "pairs_per_s": row["Inferences/Second"] * labels_per_request,
            "labels_per_request": labels_per_request,
            **{f"p{q}_ms": row[f"p{q} latency"] / 1e3 for q in (50, 90, 95, 99)},
            "server_queue_ms": row.get("Server Queue", float("nan")) / 1e3,
            "server_compute_ms": server_compute_us / 1e3,
            "server_ms": ensemble.get("request_us", 0.0) / max(1.0, ensemble.get("requests", 0.0)) / 1e3,
            "client_cpu_ms_per_request": client_cpu_s * 1e3 / max(1, sent), "checked": check.checked,
            "wrong": check.wrong, "unanswered": check.unanswered, "repeated": check.repeated,
            "problems": check.problems, "elapsed_s": elapsed, "csv": row,
        }, csv_path.read_text(encoding="utf-8").strip().splitlines()

    def measure(self, concurrency: int) -> dict:
        """One level; rerun once with more input data if perf_analyzer ran out of it."""
        attempts, windows = 0, 5  # three stable windows after a couple that were not
        with tempfile.TemporaryDirectory(prefix="zsc-perf-") as scratch:
            while True:
                attempts += 1
                level, lines = self.run_once(concurrency, self.input_size(concurrency, windows), Path(scratch))
                self.rate_per_slot = level["requests_per_s"] / concurrency
                if not level["ran_out_of_data"] or attempts == 2:
                    break
                print(f"[perf] concurrency {concurrency}: sent {level['sent']} requests, more than its "
                      f"{level['distinct_requests']} distinct ones; again with more", flush=True)
                windows = self.settings.max_trials + 1
        level["attempts"] = attempts
        self.csv_lines += lines if not self.csv_lines else lines[1:]  # perf_analyzer's header once
        print(f"[perf] concurrency {concurrency}: {level['requests_per_s']:.1f} req/s, p50 {level['p50_ms']:.1f} ms, "
              f"p99 {level['p99_ms']:.1f} ms; {level['sent']} sent, {level['failures']} failed, "
              f"{level['cache_hits']} cache hits, {level['wrong']} wrong of {level['checked']} checked", flush=True)
        return level


def level_problems(level: dict) -> list[str]:
    """Why a level's figures cannot stand (empty: they can)."""
    problems = []
    if level["failures"]:
        problems.append(f"{level['failures']} requests failed")
    if level["wrong"] or level["unanswered"]:
        problems.append(f"{level['wrong']} wrong answers, {level['unanswered']} unanswered")
    if level["ran_out_of_data"] or level["repeated"]:
        problems.append(f"perf_analyzer sent {level['sent']} requests from {level['distinct_requests']} distinct "
                        "ones: repeats may have been answered by the response cache (lower --interval-ms or "
                        "--max-trials, or raise --min-requests)")
    return problems


def markdown(meta: dict, levels: list[dict]) -> str:
    settings = meta["settings"]
    where = "started for this run" if meta["own_server"] else "already running"
    conditions = (f"{results.served_line(meta)}; perf_analyzer {meta['perf_analyzer']} on the same host against "
                  f"`zero_shot` over {settings['protocol']} (server {where}), synchronous client (one thread per "
                  f"in-flight request), one run per level, time windows of {settings['interval_ms']} ms until 3 agree "
                  f"within {settings['stability_pct']:g}% (at most {settings['max_trials']}); workload "
                  f"{meta['workload']} ({meta['label_mode']} labels, {meta['mean_labels']:.1f} labels/request on "
                  f"average), every request distinct within the run (seed {meta['seed']})")
    lines = [f"# perf_analyzer {meta['started']}", "", conditions, "", *results.table(
        ["concurrency", "req/s", "pairs/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "server queue ms",
         "server compute ms", "sent", "distinct", "failed", "cache hits", "checked", "wrong"],
        [[level["concurrency"], results.number(level["requests_per_s"]), results.number(level["pairs_per_s"], 0),
          *(results.number(level[f"p{q}_ms"]) for q in (50, 90, 95, 99)), results.number(level["server_queue_ms"]),
          results.number(level["server_compute_ms"]), level["sent"], level["distinct_requests"], level["failures"],
          level["cache_hits"], level["checked"], level["wrong"]] for level in levels])]
    lines += ["", "req/s and latencies: perf_analyzer's, over its stable windows (perf_analyzer.csv holds its CSV, "
              "latencies in µs); server queue/compute: its split of the server's time per request, from "
              "Triton's statistics; pairs/s: req/s × the checked requests' labels per request; "
              "sent, failed, cache hits: Triton's counters for `zero_shot` over the whole level (unstable windows "
              "included); checked: the answers of the measured windows, each checked against its request."]
    hit = [level for level in levels if level["cache_hits"]]
    if hit:
        lines += ["", "The response cache answered " + ", ".join(
            f"{level['cache_hits']} of {level['sent']} requests at concurrency {level['concurrency']}"
            for level in hit) + ": none of this run's requests repeats another, so these repeat requests that "
            "reached the server earlier (an earlier run or another client)."]
    for level in levels:
        for problem in level_problems(level):
            lines.append(f"\n**Concurrency {level['concurrency']}: {problem}.**")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = results.parser("perf", __doc__, server="", label_help="fresh (default): random label sets, so that "
                            "many distinct requests exist")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"),
                        help="exported repository to serve (ignored with --grpc-url)")
    parser.add_argument("--admin-key", default="",
                        help="a running server's secret: perf_analyzer reads the server's side of each request "
                             "through Triton's statistics API, which the launcher restricts to it; or start that "
                             "server with `make serve SERVE_ARGS='--open-api statistics'`")
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--concurrency", default=CONCURRENCY,
                        help="in-flight requests per level: a list or START:END:STEP (default: %(default)s)")
    parser.add_argument("--interval-ms", type=positive_int, default=5000, help="perf_analyzer's measurement window")
    parser.add_argument("--stability-pct", type=positive, default=10.0,
                        help="perf_analyzer's stability threshold over 3 windows (default: 10)")
    parser.add_argument("--max-trials", type=positive_int, default=10, help="windows before perf_analyzer gives up")
    parser.add_argument("--min-requests", type=positive_int, default=2000,
                        help="distinct requests of the first level, and the least any level gets")
    parser.add_argument("--seed", type=int, default=None, help="request draw (default: random, recorded)")
    parser.add_argument("--tools", type=Path, default=DEFAULT_DIR, help="perf_analyzer's folder (make perf-tools)")
    return parser


def run(args) -> tuple[Path, list[dict], str]:
    # checks that need no server first: the tool, the levels
    tool, levels = locate(args.tools), parse_levels(args.concurrency)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    error, levels_done = "", []
    with contextlib.ExitStack() as stack:
        target = (Target.from_urls(args.grpc_url, args.http_url, args.metrics_url, args.admin_key)
                  .check_ready(args.protocol)
                  if args.grpc_url else stack.enter_context(serve(args.repository)))
        # distinct requests: a whitespace tag of their own, which the tokenizers drop (loadtest.workload)
        sampler = Workload.load(args.workload).sampler(args.label_mode, "", "", seed=args.seed, distinct=True)
        settings = Settings(args.protocol, args.interval_ms, args.stability_pct, args.max_trials, args.min_requests)
        served = target.export_info()
        meta = results.served_meta(served, workload=Path(args.workload).name, label_mode=args.label_mode,
                                   mean_labels=sampler.mean_labels(), perf_analyzer=tool.version(),
                                   settings=dataclasses.asdict(settings), seed=args.seed,
                                   own_server=not args.grpc_url, note=args.note)
        folder = results.new_folder(args.out, "perf", meta["hardware"], meta["runtime"], meta["precision"])
        sweep = PerfSweep(tool, target, settings, sampler, score_kind_of(served), folder)
        for level in levels:
            try:
                levels_done.append(sweep.measure(level))
            except PerfError as exc:
                error = str(exc)
                if RESTRICTED in error:  # the launcher keeps Triton's statistics API to itself
                    error += (" (pass the server's secret with --admin-key, or start the server with "
                              "--open-api statistics)")
                break
    (folder / "perf_analyzer.csv").write_text("\n".join(sweep.csv_lines) + "\n", encoding="utf-8")
    results.write(folder, {"meta": meta, "levels": levels_done, "error": error},
                  markdown(meta, levels_done) + (f"\n**Stopped: {error}**\n" if error else ""))
    return folder, levels_done, error


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _folder, levels, error = run(args)
    except (OSError, ValueError, ToolError) as exc:
        print(f"perf: {exc}", file=sys.stderr)
        return 2
    if error:
        print(f"perf: {error}", file=sys.stderr)
        return 2
    problems = [f"concurrency {level['concurrency']}: {problem}"
                for level in levels for problem in level_problems(level)]
    for problem in problems:
        print(f"perf: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
