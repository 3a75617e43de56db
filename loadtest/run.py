"""Headless Locust runs, one per user count, against a running server; one results folder per call.

  python -m loadtest.run --host http://127.0.0.1:8000 --users 1,5,10 --duration 60s
  (make loadtest [USERS=1,5,10] [DURATION=60s] [HOST=http://127.0.0.1:8000] [PROTOCOL=grpc|http])

The folder (loadtest/results/locust-<date>-<hardware>-<target>-<runtime>-<precision>-<model>/) holds:
  meta.json            conditions: hardware, model, precision, runtime, workload, users, duration
  u<N>_stats.csv ...   Locust's CSV statistics for N users
  u<N>_server.json     Triton counters over the run (queue / compute time per model, batch sizes,
                       answers from the response cache) and GPU memory / utilization (Triton's gauges,
                       nvidia-smi samples)
Requests are distinct by default (--no-distinct to let the workload's repeats reach the response cache):
each text ends in a unique whitespace tag that the tokenizers drop, so the cache answers none of them and
the tokens are the workload's (loadtest/workload.py).
`python -m loadtest.report FOLDER...` turns folders into tables and plots.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from loadtest import report, results
from loadtest.driver import parse_levels
from loadtest.server import NvidiaSmiSampler, Target
from loadtest.server_metrics import gpu_gauges, model_deltas
from loadtest.workload import TRITON_INFER, Workload, flask_body, kserve_body, score_kind_of
from zsc_server.arguments import positive

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
USER_CLASSES = {"http": "TritonHttpUser", "grpc": "TritonGrpcUser", "flask": "ReferenceFlaskUser"}
DURATION_PART = re.compile(r"(\d+)([hms])")
STOP_TIMEOUT_S = 10
# what Locust may take beyond the run itself: start-up, --stop-timeout, writing its CSVs
EXIT_GRACE_S = 60


class LoadTestError(RuntimeError):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = results.parser("run", __doc__, label_mode="sets")
    parser.add_argument("--host", default="http://127.0.0.1:8000",
                        help="Triton's HTTP endpoint (or a baseline's, with --protocol flask)")
    parser.add_argument("--protocol", choices=sorted(USER_CLASSES), default="grpc",
                        help="grpc / http: Triton; flask: the reference-deployment baselines (default: grpc)")
    parser.add_argument("--grpc-url", default="", help="Triton gRPC host:port (default: --host's host, port 8001)")
    parser.add_argument("--metrics-url", default="",
                        help="Triton's Prometheus endpoint, host:port or URL (default: --host's host, port 8002; "
                             "'none' to skip)")
    parser.add_argument("--users", default="1,5,10", help="comma-separated user counts, one run each")
    parser.add_argument("--duration", default="60s", help="per user count, Locust syntax (30s, 2m)")
    parser.add_argument("--label-mix", default="", help="label-count weights, e.g. 3:4,5:2,10:1")
    parser.add_argument("--text-mix", default="", help="text-length weights, e.g. short:1,long:1")
    parser.add_argument("--distinct", action=argparse.BooleanOptionalAction, default=True,
                        help="end each text in a unique whitespace tag the tokenizers drop, so that no request "
                             "repeats and the response cache answers none: the figures are compute (default); "
                             "--no-distinct: the workload's repeats, which the cache may answer")
    parser.add_argument("--request-timeout-s", type=positive, default=30.0,
                        help="a slower answer is a failure (default: %(default)s)")
    parser.add_argument("--target", default="",
                        help="name of what is measured (default: triton-grpc, triton-http or baseline, by --protocol)")
    parser.add_argument("--model", default="", help="model name for the report (default: from the server)")
    parser.add_argument("--precision", default="", help="precision for the report (default: from the server)")
    parser.add_argument("--runtime", default="", help="runtime for the report (default: from the server)")
    parser.add_argument("--name", default="", help="results folder name (default: date and conditions)")
    parser.add_argument("--report", action="store_true", help="write report.md and plots into the folder")
    return parser


def parse_duration(spec: str) -> int:
    """Locust's --run-time syntax (`90`, `30s`, `2m`, `1h30m`) in seconds."""
    text = spec.strip().lower()
    text = f"{text}s" if text.isdigit() else text
    parts = DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise LoadTestError(f"--duration must look like 30s, 2m or 1h30m, got {spec!r}")
    seconds = sum(int(number) * {"h": 3600, "m": 60, "s": 1}[unit] for number, unit in parts)
    if seconds <= 0:  # Locust reads a zero run time as "no limit"
        raise LoadTestError(f"--duration must be above 0 s, got {spec!r}")
    return seconds


def locust_command(args, users: int, csv_prefix: Path) -> list[str]:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", str(users), "-r", str(users), "-t", args.duration, "--stop-timeout", str(STOP_TIMEOUT_S),
        "--host", args.host, "--csv", str(csv_prefix), "--exit-code-on-error", "0",
        "--workload", str(args.workload), "--label-mode", args.label_mode,
        "--request-timeout-s", str(args.request_timeout_s), "--score-kind", score_kind_of(args.served),
    ]
    if args.distinct:
        command.append("--distinct")
    for option, value in (("--label-mix", args.label_mix), ("--text-mix", args.text_mix),
                          ("--grpc-url", args.grpc_url)):
        if value:
            command += [option, value]
    return command + [USER_CLASSES[args.protocol]]


def warm_up(args, count: int = 5) -> None:
    """A few requests first, so that one-time costs (first inference, lazy allocations) stay out of the
    numbers; fails early with a clear message when nothing answers at --host."""
    sampler = Workload.load(args.workload).sampler(args.label_mode, args.label_mix, args.text_mix, seed=99,
                                                   distinct=args.distinct)
    url, body = ("/classify", flask_body) if args.protocol == "flask" else (TRITON_INFER, kserve_body)
    for _ in range(count):
        http = urllib.request.Request(args.host.rstrip("/") + url, data=json.dumps(body(sampler.next())).encode(),
                                      headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(http, timeout=max(args.request_timeout_s, 60)) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise LoadTestError(f"no answer from {args.host}{url}: {exc}. Is the server running "
                                f"(`make serve`)?") from None


def run(args) -> Path:
    users_list = parse_levels(args.users, "--users")
    deadline_s = parse_duration(args.duration) + STOP_TIMEOUT_S + EXIT_GRACE_S
    is_triton = args.protocol != "flask"
    target = Target.from_urls(args.grpc_url or f"{urlsplit(args.host).hostname}:8001", args.host, args.metrics_url)
    if not is_triton:
        target = dataclasses.replace(target, metrics_url="none")
    served = args.served = target.export_info() if is_triton else {}
    sampler = Workload.load(args.workload).sampler(args.label_mode, args.label_mix, args.text_mix)
    given = {"source": args.model, "precision": args.precision, "runtime": args.runtime}
    meta = results.served_meta(
        served | {key: value for key, value in given.items() if value},
        target=args.target or (f"triton-{args.protocol}" if is_triton else "baseline"), protocol=args.protocol,
        mode=served.get("mode", "nli"), users=users_list, duration=args.duration, label_mode=args.label_mode,
        label_mix=args.label_mix, text_mix=args.text_mix, distinct=args.distinct,
        mean_labels=round(sampler.mean_labels(), 3), workload=results.shown(args.workload), host=args.host,
        note=args.note, load_generator="Locust, on the same machine as the server")
    warm_up(args)  # before any folder is written: nothing answering is an error, not an empty result
    folder = results.new_folder(args.out, "locust", meta["hardware"], meta["target"], meta["runtime"],
                                meta["precision"], Path(meta["model"]).name, name=args.name)
    results.write_json(folder / "meta.json", meta)
    print(f"[loadtest] {meta['target']} ({meta['model']}, {meta['runtime']}, {meta['precision']}) on "
          f"{meta['hardware']}; results in {folder}", flush=True)
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(results.ROOT),
                                                                             os.environ.get("PYTHONPATH")])))
    for users in users_list:
        print(f"[loadtest] {users} user(s) for {args.duration} ...", flush=True)
        before = target.counters()
        with NvidiaSmiSampler() as gpu:
            done = run_locust(locust_command(args, users, folder / f"u{users}"), environment, deadline_s)
        if done.returncode != 0 or not (folder / f"u{users}_stats.csv").is_file():
            raise LoadTestError(f"locust failed ({done.returncode}):\n{done.stderr[-3000:]}")
        (folder / f"u{users}_locust.log").write_text(done.stderr, encoding="utf-8")
        after = target.counters()
        results.write_json(folder / f"u{users}_server.json", {"models": model_deltas(before, after),
                                                               "triton_gpu": gpu_gauges(after),
                                                               "nvidia_smi": gpu.summary()})
        row = report.read_run(folder, users)
        print(f"[loadtest] {users} user(s): {row.requests} requests, {row.success_rate:.2%} ok, avg "
              f"{row.avg_ms:.0f} ms, p95 {row.p95_ms:.0f} ms, {row.rps:.1f} req/s, answered from cache: "
              f"{row.cache_cell()}", flush=True)
    return folder


def run_locust(command: list[str], environment: dict, deadline_s: float) -> subprocess.CompletedProcess:
    """Locust in its own process, killed (SIGKILL: a hung Locust ignores SIGTERM) when it outlives
    the run by more than the grace time, so that a stuck load generator is an error, never a hang."""
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=deadline_s)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        raise LoadTestError(f"locust did not exit within {deadline_s:.0f} s (run time + {STOP_TIMEOUT_S} s "
                            f"stop timeout + {EXIT_GRACE_S} s grace) and was killed; last output:\n"
                            f"{stderr[-3000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        folder = run(args)
    except (LoadTestError, ValueError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    if args.report and report.main([str(folder)]) != 0:
        return 2
    failed = sum(row.failures for row in report.read_results(folder).rows.values())
    print(f"[loadtest] done: python -m loadtest.report {folder}", flush=True)
    if failed:  # as Locust's own exit code says: some requests failed (u<N>_failures.csv says which and why)
        print(f"[loadtest] {failed} requests failed: see {folder}/u*_failures.csv", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
