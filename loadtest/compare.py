"""Our Triton deployment against the reference deployment, same checkpoint, same inputs, same Locust scenario,
one machine, one run (make loadtest-compare):

  1. a random-weight checkpoint in the StructBERT-base (or -large) shape (ModelScope layout, and the same
     weights in Hugging Face layout): the comparison is about serving, not about the model;
  2. ours, at each of --precisions: fp32 (ONNX FP32) and int8 (the same graph with INT8 weights,
     export/onnx2int8.py), exported and served by tritonserver, driven over HTTP (KServe v2 JSON);
  3. the reference deployment: ModelScope's zero-shot pipeline behind Flask, one request at a time;
  4. the Hugging Face zero-shot pipeline served the same way.
Requests are distinct (--no-distinct to turn it off): every text ends in a unique whitespace tag that
the tokenizers drop, so no request repeats and Triton's response cache answers none of them, while
every setup computes exactly the workload's tokens. Each run counts the answers that came from the
cache (Triton's per-model counters). --cached-run adds ours (first precision) on the workload's
repeating requests with the cache on, as a separately labelled column.
Each setup runs alone on the machine (the others stopped), for every user count. The result is
comparison.md (conditions, ratios, full tables, plots) in loadtest/results/compare-<date>-<shape>/.

examples:
  python -m loadtest.compare --users 1,5,10 --duration 60s             # base shape: fp32 and int8 vs both pipelines
  python -m loadtest.compare --shape large --precisions int8 --users 1 --label-mix 3:1,4:1,5:1 \\
      --baselines reference-modelscope        # the reference deployment's model shape, 3-5 labels
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

from export.errors import ExportError
from export.options import ExportOptions
from export.pipeline import export_model
from export.random_checkpoint import main as write_checkpoint
from loadtest import report
from loadtest.run import LoadTestError
from loadtest.run import build_parser as run_parser
from loadtest.run import run as run_loadtest
from loadtest.server import serve
from zsc_server.triton_process import free_ports

HERE = Path(__file__).resolve().parent
BASELINES = {"reference-modelscope": "modelscope", "reference-huggingface": "huggingface"}
PRECISIONS = ("fp32", "int8")
# The reference deployment's own figures for its model (StructBERT-large), as its README reports them; not
# measured here, shown beside ours for the large shape.
REFERENCE_FIGURES = (
    ("reference deployment on a T4 GPU", "180 ms mean, one user"),
    ("reference deployment on CPU", "1,200 ms+ mean, timeouts, under 60% success at 5 users"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="1,5,10", help="comma-separated user counts (default: %(default)s)")
    parser.add_argument("--duration", default="60s", help="per user count and setup (Locust syntax)")
    parser.add_argument("--shape", choices=["tiny", "base", "large"], default="base",
                        help="encoder shape of the random checkpoint: base = StructBERT-base (12 layers, 768), "
                             "large = StructBERT-large, the reference deployment's model (24 layers, 1024) "
                             "(default: %(default)s)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS),
                        help="our encoder precisions, each exported and measured (default: %(default)s); int8's "
                             "accuracy gate only reports here: random weights cannot show accuracy")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--label-mode", default="sets")
    parser.add_argument("--label-mix", default="",
                        help="label-count weights, e.g. 3:1,4:1,5:1 for 3-5 labels (default: the workload's sets)")
    parser.add_argument("--distinct", action=argparse.BooleanOptionalAction, default=True,
                        help="distinct requests, so the response cache answers none (default); --no-distinct: "
                             "the workload's repeats")
    parser.add_argument("--cached-run", action="store_true",
                        help="also measure ours (first precision) on repeating requests with the response cache on, "
                             "as a separate, labelled column")
    parser.add_argument("--gate-requests", type=int, default=48,
                        help="int8: requests the export's accuracy gate checks; few, since on random weights it "
                             "only reports (default: %(default)s)")
    parser.add_argument("--baseline-python", type=Path, default=Path(".venv-modelscope/bin/python"),
                        help="interpreter with modelscope, transformers < 5 and flask (make setup-modelscope)")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help="which baselines to run, comma-separated, or '' for none (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=HERE / ".work", help="checkpoints and export (reused)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    return parser


def prepare_checkpoints(work: Path, shape: str, huggingface: bool = True) -> tuple[Path, Path]:
    """The ModelScope-layout checkpoint, and its Hugging Face-layout twin when the HF baseline runs."""
    modelscope_dir, huggingface_dir = work / f"structbert-{shape}-modelscope", work / f"structbert-{shape}-hf"
    for directory, layout in ((modelscope_dir, "modelscope"), (huggingface_dir, "huggingface")):
        if layout == "huggingface" and not huggingface:
            continue
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


def measure(args, name: str, host: str, protocol: str, extra: list[str], folder: Path,
            distinct: bool | None = None) -> report.ResultSet:
    distinct = args.distinct if distinct is None else distinct
    run_args = run_parser().parse_args([
        "--host", host, "--protocol", protocol, "--users", args.users, "--duration", args.duration,
        "--label-mode", args.label_mode, "--target", name, "--out", str(folder), "--name", name,
        "--distinct" if distinct else "--no-distinct", *(["--label-mix", args.label_mix] if args.label_mix else []),
        *extra,
    ])
    return report.read_results(run_loadtest(run_args))


def parse_precisions(spec: str) -> list[str]:
    precisions = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = set(precisions) - set(PRECISIONS)
    if not precisions or unknown:
        raise LoadTestError(f"--precisions takes {', '.join(PRECISIONS)}, got {spec!r}")
    return precisions


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
    try:
        precisions = parse_precisions(args.precisions)
    except LoadTestError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    folder = args.out / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{args.shape}"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        ours, theirs = compare(args, precisions, baselines, folder)
    except LoadTestError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    markdown = render(ours, theirs, args)
    (folder / "comparison.md").write_text(markdown, encoding="utf-8")
    report.plot(ours + theirs, folder)
    print(markdown)
    print(f"[compare] wrote {folder / 'comparison.md'}", flush=True)
    return 0


def repository_for(args, precision: str) -> Path:
    return args.work / f"repository-{args.shape}-{precision}"


def export_ours(args, checkpoint: Path, precision: str) -> Path:
    repository = repository_for(args, precision)
    # random weights: the INT8 gate's figures are printed and recorded, not enforced (see export/agreement.py)
    gate = {"accuracy_gate": "report", "gate_requests": args.gate_requests} if precision == "int8" else {}
    try:
        return export_model(ExportOptions(model=str(checkpoint), repository=repository, max_length=args.max_length,
                                          precision=precision, **gate))
    except ExportError as exc:
        raise LoadTestError(f"export ({precision}) failed: {exc}") from None


def compare(args, precisions: list[str], baselines: list[str],
            folder: Path) -> tuple[list[report.ResultSet], list[report.ResultSet]]:
    print(f"[compare] {args.shape}-shape random checkpoint in {args.work}", flush=True)
    modelscope_dir, huggingface_dir = prepare_checkpoints(args.work, args.shape, "reference-huggingface" in baselines)

    ours = []
    for number, precision in enumerate(precisions):
        repository = export_ours(args, modelscope_dir, precision)
        print(f"[compare] ours: tritonserver, {precision}", flush=True)
        cached = args.cached_run and number == 0  # the response cache on only where a run measures it
        with serve(repository, folder / f"tritonserver-{precision}.log", response_cache=cached) as target:
            served = (f"http://{target.http_url}", "http", ["--metrics-url", target.metrics_url])
            ours.append(measure(args, f"triton-{precision}", *served, folder))
            if args.cached_run and number == 0:
                print(f"[compare] ours: {precision}, repeating requests, response cache on", flush=True)
                ours.append(measure(args, f"triton-{precision}-cache-on", *served, folder, distinct=False))

    theirs = []
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
                theirs.append(measure(args, name, f"http://127.0.0.1:{port}", "flask",
                                      ["--model", model.name, "--runtime", f"{pipeline}-pipeline",
                                       "--precision", "fp32"], folder))
            finally:
                process.terminate()
                process.wait(timeout=30)
    return ours, theirs


def export_info(args, precision: str) -> dict:
    return json.loads((repository_for(args, precision) / "encoder" / "export.json").read_text(encoding="utf-8"))


def requests_sentence(args) -> str:
    if args.distinct:
        return ("**Distinct requests**: every text ends in a unique whitespace tag that the tokenizers drop, so no "
                "request repeats, Triton's response cache answers none of ours (counted below), and every setup "
                "computes exactly the workload's tokens.")
    return ("**Repeating requests** (--no-distinct): the workload's texts and label sets recur, and Triton's response "
            "cache answers the repeats (counted below); the baselines have no cache.")


def precision_ratio_table(fp32: report.ResultSet, int8: report.ResultSet) -> str:
    rows = []
    for users in sorted(set(fp32.rows) & set(int8.rows)):
        a, b = fp32.rows[users], int8.rows[users]
        rows.append([str(users), report.fmt(a.rps), report.fmt(b.rps),
                     report.fmt(b.rps / a.rps if a.rps else float("nan"), 2), report.fmt(a.avg_ms, 0),
                     report.fmt(b.avg_ms, 0), report.fmt(a.p95_ms, 0), report.fmt(b.p95_ms, 0),
                     report.fmt(a.p95_ms / b.p95_ms if b.p95_ms else float("nan"), 2)])
    return report.table(["Users", "FP32 req/s", "INT8 req/s", "Throughput ×", "FP32 mean (ms)", "INT8 mean (ms)",
                         "FP32 P95 (ms)", "INT8 P95 (ms)", "P95 ÷"], rows)


def cache_table(results: list[report.ResultSet]) -> str:
    rows = [[r.meta["target"], report.requests_kind(r.meta), str(users), f"{row.requests:,}", row.cache_cell()]
            for r in results for users, row in sorted(r.rows.items())]
    return report.table(["Setup", "Requests", "Users", "Requests (Locust)", "Answered from cache (Triton)"], rows)


def gate_sentence(info: dict) -> str:
    gate = info.get("int8_agreement")
    if not gate:
        return "not recorded"
    return (f"max |Δ score| {gate['max_abs_delta']:.4f}, mean |Δ score| {gate['mean_abs_delta']:.4f}, top-1 agreement "
            f"{gate['top1_agreement']:.1%} ({gate['top1_strict']:.1%} strict) on {gate['requests']} requests: "
            f"{'within' if gate['passed'] else 'outside'} the export's limits")


def reference_figures_table(ours: list[report.ResultSet]) -> str:
    rows = [[setup, figure, "the reference deployment's README (not measured here)"]
            for setup, figure in REFERENCE_FIGURES]
    for result in ours:
        if 1 in result.rows:
            row = result.rows[1]
            rows.append([f"ours, {result.meta['precision']}, {result.meta['hardware']}",
                         f"{report.fmt(row.avg_ms, 0)} ms mean, P95 {report.fmt(row.p95_ms, 0)} ms, one user, "
                         f"{row.success_rate:.1%} success", "this run"])
    return report.table(["Setup (StructBERT-large)", "Latency", "Source"], rows)


def render(ours: list[report.ResultSet], theirs: list[report.ResultSet], args) -> str:
    measured = [r for r in ours if not r.meta["target"].endswith("-cache-on")]
    precisions = [r.meta["precision"] for r in measured]
    infos = {precision: export_info(args, precision) for precision in precisions}
    first = infos[precisions[0]]
    labels = f"{args.label_mode} label mode" + (f", label mix {args.label_mix}" if args.label_mix else "")
    names = {r.meta["target"] for r in theirs}
    layouts = ("ModelScope layout for ours and the ModelScope pipeline; the same weights in Hugging Face layout "
               "for the HF pipeline" if "reference-huggingface" in names else "ModelScope layout")
    baselines = (f"{', '.join(sorted(names))}: one pipeline behind Flask, one request at a time, FP32" if theirs
                 else "none in this run")
    lines = [
        f"# Triton deployment vs the reference deployment ({args.shape} shape)",
        "",
        f"Model: random weights in the StructBERT-{args.shape} shape ({layouts}), max length "
        f"{first['max_length']}. Ours: {first['runtime']}, {' and '.join(precisions)}, sequence buckets "
        f"{first['buckets']}, HTTP KServe v2 JSON. Baselines: {baselines}. Same Locust scenario ({labels}, "
        f"{ours[0].meta['mean_labels']:.1f} labels per request on average, workload loadtest/data/workload.json), "
        f"{args.duration} per user count, each setup alone on {ours[0].meta['hardware']}, load generator on the "
        "same machine.",
        "",
        requests_sentence(args),
        "",
        "Throughput × = our requests/s ÷ theirs; P95 ÷ = their P95 ÷ ours (above 1: ours is faster).",
    ]
    if theirs:
        for result in sorted(measured, key=lambda r: r.meta["precision"] != "int8"):
            lines += ["", f"## Ours ({result.meta['precision']}) vs the reference deployment", "",
                      report.comparison_table(result, theirs)]
    by_precision = {r.meta["precision"]: r for r in measured}
    if {"fp32", "int8"} <= set(by_precision):
        lines += ["", "## INT8 vs FP32 (ours)", "", precision_ratio_table(by_precision["fp32"], by_precision["int8"])]
    if "int8" in infos:
        lines += ["", "## INT8 accuracy gate at export", "",
                  f"On this random-weight checkpoint: {gate_sentence(infos['int8'])}. Random weights cannot show "
                  "accuracy (their scores are near-ties that any rounding reorders): these figures say nothing about "
                  "a real model; see docs/models-and-export.md, INT8 on CPU."]
    lines += ["", "## Answers from the response cache", "", cache_table(ours + theirs)]
    if args.shape == "large":
        lines += ["", "## Beside the reference deployment's own figures", "", reference_figures_table(measured)]
    lines += ["", report.render(ours + theirs, report.load_prices(report.DEFAULT_PRICES), 200.0).replace(
        "# Load-test report", "## Full tables")]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
