"""Our Triton deployment against the seed's stack, same checkpoint, same inputs, same Locust scenario,
one machine, one run (make loadtest-compare):

  1. a random-weight checkpoint in the StructBERT-base shape (ModelScope layout, and the same weights in
     Hugging Face layout): the comparison is about serving, not about the model;
  2. ours: exported (ONNX, FP32) and served by tritonserver, driven over HTTP (KServe v2 JSON);
  3. the seed stack: ModelScope's zero-shot pipeline behind Flask, one request at a time;
  4. the Hugging Face zero-shot pipeline served the same way.
Each runs alone on the machine (the others stopped), for every user count. The result is
comparison.md (conditions, ratios, full tables, plots) in loadtest/results/compare-<date>/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

from export.cli import main as export_main
from export.random_checkpoint import main as write_checkpoint
from loadtest import report
from loadtest.run import LoadTestError
from loadtest.run import build_parser as run_parser
from loadtest.run import run as run_loadtest
from zsc_server.serve import TritonServer, free_ports

HERE = Path(__file__).resolve().parent
BASELINES = {"seed-modelscope": "modelscope", "seed-huggingface": "huggingface"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="1,5,10")
    parser.add_argument("--duration", default="60s", help="per user count and setup (Locust syntax)")
    parser.add_argument("--shape", choices=["tiny", "base", "large"], default="base", help="encoder shape")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--label-mode", default="sets")
    parser.add_argument("--baseline-python", type=Path, default=Path(".venv-modelscope/bin/python"),
                        help="interpreter with modelscope, transformers < 5 and flask (make setup-modelscope)")
    parser.add_argument("--baselines", default=",".join(BASELINES), help="which baselines to run")
    parser.add_argument("--work", type=Path, default=HERE / ".work", help="checkpoints and export (reused)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    return parser


def prepare_checkpoints(work: Path, shape: str) -> tuple[Path, Path]:
    modelscope_dir, huggingface_dir = work / f"structbert-{shape}-modelscope", work / f"structbert-{shape}-hf"
    for directory, layout in ((modelscope_dir, "modelscope"), (huggingface_dir, "huggingface")):
        if not (directory / "config.json").is_file():
            write_checkpoint([str(directory), "--shape", shape, "--layout", layout, "--seed", "0"])
    return modelscope_dir, huggingface_dir


def wait_for(url: str, process: subprocess.Popen, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LoadTestError(f"the baseline exited with code {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(1)
    raise LoadTestError(f"no answer from {url} within {timeout_s:.0f}s")


def measure(args, name: str, host: str, protocol: str, extra: list[str], folder: Path) -> report.ResultSet:
    run_args = run_parser().parse_args([
        "--host", host, "--protocol", protocol, "--users", args.users, "--duration", args.duration,
        "--label-mode", args.label_mode, "--target", name, "--out", str(folder), "--name", name, *extra,
    ])
    return report.read_results(run_loadtest(run_args))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    baselines = [name for name in args.baselines.split(",") if name]
    unknown = set(baselines) - set(BASELINES)
    if unknown:
        print(f"compare: unknown baselines {sorted(unknown)}; choose from {', '.join(BASELINES)}", file=sys.stderr)
        return 2
    if baselines and not args.baseline_python.is_file():
        print(f"compare: {args.baseline_python} not found: run `make setup-modelscope`", file=sys.stderr)
        return 2
    folder = args.out / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{args.shape}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        results = compare(args, baselines, folder)
    except LoadTestError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    markdown = render(results, args)
    (folder / "comparison.md").write_text(markdown, encoding="utf-8")
    report.plot(results, folder)
    print(markdown)
    print(f"[compare] wrote {folder / 'comparison.md'}", flush=True)
    return 0


def compare(args, baselines: list[str], folder: Path) -> list[report.ResultSet]:
    print(f"[compare] {args.shape}-shape random checkpoint in {args.work}", flush=True)
    modelscope_dir, huggingface_dir = prepare_checkpoints(args.work, args.shape)
    repository = args.work / f"repository-{args.shape}"
    if export_main(["--model", str(modelscope_dir), "--repository", str(repository),
                    "--max-length", str(args.max_length)]) != 0:
        raise LoadTestError("export failed")

    results = []
    http, grpc, metrics = free_ports(3)
    print("[compare] ours: tritonserver", flush=True)
    with TritonServer(repository, http, grpc, metrics, log_path=folder / "tritonserver.log") as server:
        results.append(measure(args, "triton", f"http://{server.http_url}", "http",
                               ["--metrics-url", f"http://127.0.0.1:{metrics}/metrics"], folder))

    for name in baselines:
        pipeline = BASELINES[name]
        model = modelscope_dir if pipeline == "modelscope" else huggingface_dir
        [port] = free_ports(1)
        print(f"[compare] baseline: {pipeline} pipeline behind Flask", flush=True)
        with open(folder / f"{name}.log", "wb") as log:
            process = subprocess.Popen([str(args.baseline_python), str(HERE / "baselines" / "flask_app.py"),
                                        "--pipeline", pipeline, "--model", str(model), "--port", str(port)],
                                       stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for(f"http://127.0.0.1:{port}/health", process)
                results.append(measure(args, name, f"http://127.0.0.1:{port}", "flask",
                                       ["--model", model.name, "--runtime", f"{pipeline}-pipeline",
                                        "--precision", "fp32"], folder))
            finally:
                process.terminate()
                process.wait(timeout=30)
    return results


def render(results: list[report.ResultSet], args) -> str:
    ours, baselines = results[0], results[1:]
    export_info = json.loads((args.work / f"repository-{args.shape}" / "encoder" / "export.json").read_text())
    lines = [
        f"# Triton deployment vs the seed stack ({args.shape} shape)",
        "",
        f"Model: random weights in the StructBERT-{args.shape} shape (ModelScope layout for ours and the "
        "ModelScope pipeline; the same weights in Hugging Face layout for the HF pipeline), max length "
        f"{export_info['max_length']}. Ours: {export_info['runtime']} {export_info['precision']}, sequence "
        f"buckets {export_info['buckets']}, HTTP "
        "KServe v2 JSON. Baselines: one pipeline behind Flask, one request at a time. Same Locust "
        f"scenario ({args.label_mode} label mode, workload loadtest/data/workload.json), "
        f"{args.duration} per user count, each setup alone on {ours.meta['hardware']}, load generator on "
        "the same machine.",
        "",
        "Throughput × = our requests/s ÷ theirs; P95 ÷ = their P95 ÷ ours (above 1: ours is faster).",
        "",
        report.comparison_table(ours, baselines),
        "",
        report.render(results, report.load_prices(report.DEFAULT_PRICES), 200.0).replace("# Load-test report",
                                                                                        "## Full tables"),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
