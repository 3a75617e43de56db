"""Our Triton deployment against the reference deployment, same checkpoint, same inputs, same Locust scenario,
one machine, one run (make loadtest-compare):

  1. a random-weight checkpoint in the StructBERT-base (or -large) shape (ModelScope layout, and the same
     weights in Hugging Face layout): the comparison is about serving, not about the model;
  2. ours, in each of --setups (SETUPS: fp32 and int8 on ONNX Runtime, ov-fp32 and ov-int8 on OpenVINO),
     exported and served by tritonserver, driven over HTTP (KServe v2 JSON);
  3. the reference deployment: ModelScope's zero-shot pipeline behind Flask, one request at a time;
  4. the Hugging Face zero-shot pipeline served the same way.
Requests are distinct (--no-distinct to turn it off): every text ends in a unique whitespace tag that
the tokenizers drop, so no request repeats and Triton's response cache answers none of them, while
every setup computes exactly the workload's tokens; the servers run without the response cache. Each
run counts the answers that came from the cache (Triton's per-model counters). --cached-run adds ours
(first setup) on the workload's repeating requests with the cache on, as a separately labelled column.
Each setup runs alone on the machine (the others stopped), for every user count. The result is
comparison.json and comparison.md (conditions, ratios, full tables, plots) in
loadtest/results/compare-<date>-<shape>/.

examples:
  python -m loadtest.compare --users 1,5,10 --duration 60s       # base shape: fp32, int8, ov-int8 vs both pipelines
  python -m loadtest.compare --shape large --setups ov-int8,int8 --users 1 --label-mix 3:1,4:1,5:1 \\
      --baselines reference-modelscope        # the reference deployment's model shape, 3-5 labels
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from export.errors import ExportError
from export.random_checkpoint import main as write_checkpoint
from loadtest import report, results
from loadtest.bench import export_variant
from loadtest.driver import parse_levels
from loadtest.run import LoadTestError, parse_duration
from loadtest.run import build_parser as run_parser
from loadtest.run import run as run_loadtest
from loadtest.server import serve
from zsc_server.triton_process import free_ports

HERE = Path(__file__).resolve().parent
BASELINES = {"reference-modelscope": "modelscope", "reference-huggingface": "huggingface"}
# ours: python -m export's flags per setup (CPU: the export's default runtime is python-ort)
SETUPS = {"fp32": "--precision fp32", "int8": "--precision int8", "ov-fp32": "--runtime python-ov",
          "ov-int8": "--runtime python-ov --precision int8"}
DEFAULT_SETUPS = "fp32,int8,ov-int8"
# The reference deployment's own figures for its model (StructBERT-large), as its README reports them; not
# measured here, shown beside ours for the large shape.
REFERENCE_FIGURES = (
    ("reference deployment on a T4 GPU", "180 ms mean, one user"),
    ("reference deployment on CPU", "1,200 ms+ mean, timeouts, under 60% success at 5 users"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = results.parser("compare", __doc__, label_mode="sets")
    parser.add_argument("--users", default="1,5,10", help="comma-separated user counts (default: %(default)s)")
    parser.add_argument("--duration", default="60s", help="per user count and setup (Locust syntax)")
    parser.add_argument("--shape", choices=["tiny", "base", "large"], default="base",
                        help="encoder shape of the random checkpoint: base = StructBERT-base (12 layers, 768), "
                             "large = StructBERT-large, the reference deployment's model (24 layers, 1024) "
                             "(default: %(default)s)")
    described = ", ".join(f"{name} ({flags or 'the defaults'})" for name, flags in SETUPS.items())
    parser.add_argument("--setups", default=DEFAULT_SETUPS,
                        help=f"ours, each exported and measured: {described} (default: %(default)s); INT8's accuracy "
                             "gate only reports here: random weights cannot show accuracy")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--label-mix", default="",
                        help="label-count weights, e.g. 3:1,4:1,5:1 for 3-5 labels (default: the workload's sets)")
    parser.add_argument("--distinct", action=argparse.BooleanOptionalAction, default=True,
                        help="distinct requests, so the response cache answers none (default); --no-distinct: "
                             "the workload's repeats")
    parser.add_argument("--cached-run", action="store_true",
                        help="also measure ours (first setup) on repeating requests with the response cache on, "
                             "as a separate, labelled column")
    parser.add_argument("--gate-requests", type=int, default=48,
                        help="int8: requests the export's accuracy gate checks; few, since on random weights it "
                             "only reports (default: %(default)s)")
    parser.add_argument("--baseline-python", type=Path, default=Path(".venv-modelscope/bin/python"),
                        help="interpreter with modelscope, transformers < 5 and flask (make setup-modelscope)")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help="which baselines to run, comma-separated, or '' for none (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=HERE / ".work", help="checkpoints and exports (reused)")
    return parser


def parse_setups(spec: str) -> list[str]:
    setups = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = set(setups) - set(SETUPS)
    if not setups or unknown:
        raise LoadTestError(f"--setups takes {', '.join(SETUPS)}, got {spec!r}")
    return setups


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


def locust_target(target) -> tuple[str, str, list[str]]:
    """A served Target as `measure` takes it: Locust's host, protocol and extra flags."""
    return f"http://{target.http_url}", "http", ["--metrics-url", target.metrics_url]


def measure(args, name: str, host: str, protocol: str, extra: list[str], folder: Path,
            distinct: bool | None = None) -> report.ResultSet:
    """One setup through loadtest.run (Locust, every user count), read back."""
    distinct = args.distinct if distinct is None else distinct
    run_args = run_parser().parse_args([
        "--host", host, "--protocol", protocol, "--users", args.users, "--duration", args.duration,
        "--label-mode", args.label_mode, "--workload", str(args.workload), "--target", name, "--out", str(folder),
        "--name", name, "--distinct" if distinct else "--no-distinct", "--note", args.note,
        *(["--label-mix", args.label_mix] if args.label_mix else []), *extra,
    ])
    return report.read_results(run_loadtest(run_args))


def run(args, setups: list[str], baselines: list[str], folder: Path) -> tuple[list, list, dict]:
    """Ours per setup, then each baseline, one after the other: their results and our exports' facts."""
    print(f"[compare] {args.shape}-shape random checkpoint in {args.work}", flush=True)
    checkpoints = {layout: args.work / f"structbert-{args.shape}-{suffix}" for layout, suffix in
                   (("modelscope", "modelscope"), ("huggingface", "hf"))}
    for layout, directory in checkpoints.items():  # the Hugging Face layout only for its baseline
        wanted = layout == "modelscope" or "reference-huggingface" in baselines
        if wanted and not (directory / "config.json").is_file():
            write_checkpoint([str(directory), "--shape", args.shape, "--layout", layout, "--seed", "0"])
    ours, exports = [], {}
    for number, setup in enumerate(setups):
        # random weights: the INT8 gate's figures are printed and recorded, not enforced (see export/agreement.py)
        gate = f" --accuracy-gate report --gate-requests {args.gate_requests}" if "int8" in setup else ""
        try:
            repository = export_variant(str(checkpoints["modelscope"]), args.work / f"repository-{args.shape}-{setup}",
                                        f"{SETUPS[setup]} --max-length {args.max_length}{gate}")
        except ExportError as exc:
            raise LoadTestError(f"export ({setup}) failed: {exc}") from None
        exports[f"triton-{setup}"] = json.loads((repository / "encoder" / "export.json").read_text(encoding="utf-8"))
        print(f"[compare] ours: tritonserver, {setup}", flush=True)
        with serve(repository, folder / f"tritonserver-{setup}.log") as target:
            ours.append(measure(args, f"triton-{setup}", *locust_target(target), folder))
        if args.cached_run and number == 0:  # a server of its own: every other run is measured without the cache
            print(f"[compare] ours: {setup}, repeating requests, response cache on", flush=True)
            with serve(repository, folder / f"tritonserver-{setup}-cache-on.log", response_cache=True) as target:
                ours.append(measure(args, f"triton-{setup}-cache-on", *locust_target(target), folder, distinct=False))

    theirs = []
    for name in baselines:
        pipeline = BASELINES[name]
        model = checkpoints[pipeline]
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
    return ours, theirs, exports


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def summarize(ours: list[report.ResultSet], theirs: list[report.ResultSet], exports: dict, args) -> dict:
    """comparison.json: every setup's levels, ours against each baseline and against FP32, the INT8 gates."""
    def levels(result: report.ResultSet) -> dict:
        return {users: dataclasses.asdict(row) | {"success_rate": row.success_rate}
                for users, row in sorted(result.rows.items())}

    def export(name: str) -> dict:
        return {key: exports.get(name, {}).get(key) for key in ("max_length", "buckets", "int8_agreement")}

    measured = [r for r in ours if not r.meta["target"].endswith("-cache-on")]
    fp32 = next((r for r in measured if r.meta["target"] == "triton-fp32"), None)
    return {
        "meta": {"shape": args.shape, "users": args.users, "duration": args.duration, "label_mode": args.label_mode,
                 "label_mix": args.label_mix, "distinct": args.distinct, "hardware": ours[0].meta["hardware"],
                 "mean_labels": ours[0].meta["mean_labels"], "started": ours[0].meta["started"]},
        "setups": {r.meta["target"]: {"runtime": r.meta["runtime"], "precision": r.meta["precision"],
                                      "requests": report.requests_kind(r.meta), "levels": levels(r),
                                      "export": export(r.meta["target"].removesuffix("-cache-on"))}
                   for r in ours},
        "baselines": {r.meta["target"]: {"runtime": r.meta["runtime"], "levels": levels(r)} for r in theirs},
        "against_baselines": [
            {"ours": mine.meta["target"], "baseline": base.meta["target"], "users": users,
             "throughput_ratio": ratio(row.rps, base.rows[users].rps),
             "p95_ratio": ratio(base.rows[users].p95_ms, row.p95_ms)}
            for mine in measured for base in theirs for users, row in sorted(mine.rows.items())
            if users in base.rows],
        "against_fp32": [
            {"setup": mine.meta["target"], "users": users, "throughput_ratio": ratio(row.rps, fp32.rows[users].rps),
             "mean_ratio": ratio(fp32.rows[users].avg_ms, row.avg_ms),
             "p95_ratio": ratio(fp32.rows[users].p95_ms, row.p95_ms)}
            for mine in measured if fp32 and mine is not fp32 for users, row in sorted(mine.rows.items())
            if users in fp32.rows],
    }


def render(data: dict, ours: list[report.ResultSet], theirs: list[report.ResultSet]) -> str:
    meta, setups = data["meta"], data["setups"]
    measured = [name for name in setups if not name.endswith("-cache-on")]
    first = setups[measured[0]]["export"]
    labels = f"{meta['label_mode']} label mode" + (f", label mix {meta['label_mix']}" if meta["label_mix"] else "")
    layouts = ("ModelScope layout for ours and the ModelScope pipeline; the same weights in Hugging Face layout "
               "for the HF pipeline" if "reference-huggingface" in data["baselines"] else "ModelScope layout")
    baselines = (f"{', '.join(sorted(data['baselines']))}: one pipeline behind Flask, one request at a time, FP32"
                 if data["baselines"] else "none in this run")
    ours_line = "; ".join(f"{name} ({s['runtime']}, {s['precision']})" for name, s in setups.items())
    lines = [f"# Triton deployment vs the reference deployment ({meta['shape']} shape)", "",
             f"Model: random weights in the StructBERT-{meta['shape']} shape ({layouts}), max length "
             f"{first['max_length']}. Ours: {ours_line}; sequence buckets {first['buckets']}, HTTP KServe v2 JSON, "
             f"response cache off. Baselines: {baselines}. Same Locust scenario ({labels}, {meta['mean_labels']:.1f} "
             f"labels per request on average, workload loadtest/data/workload.json), {meta['duration']} per user "
             f"count, each setup alone on {meta['hardware']}, load generator on the same machine.", "",
             "**Distinct requests**: every text ends in a unique whitespace tag that the tokenizers drop, so no "
             "request repeats, Triton's response cache answers none of ours (counted below), and every setup "
             "computes exactly the workload's tokens." if meta["distinct"] else "**Repeating requests** "
             "(--no-distinct): the workload's texts and label sets recur (the baselines have no cache).", "",
             "Throughput × = our requests/s ÷ theirs; P95 ÷ = their P95 ÷ ours (above 1: ours is faster)."]
    for baseline in data["baselines"]:
        rows = [r for r in data["against_baselines"] if r["baseline"] == baseline]
        lines += ["", f"## Ours vs {baseline}", "", *results.table(
            ["Setup", "Users", "Our req/s", "Their req/s", "Throughput ×", "Our P95 (ms)", "Their P95 (ms)", "P95 ÷"],
            [[r["ours"], r["users"], results.number(setups[r["ours"]]["levels"][r["users"]]["rps"]),
              results.number(data["baselines"][baseline]["levels"][r["users"]]["rps"]),
              results.number(r["throughput_ratio"], 2),
              results.number(setups[r["ours"]]["levels"][r["users"]]["p95_ms"], 0),
              results.number(data["baselines"][baseline]["levels"][r["users"]]["p95_ms"], 0),
              results.number(r["p95_ratio"], 2)] for r in rows])]
    if data["against_fp32"]:
        lines += ["", "## Against FP32 (ours; × and ÷ as above, FP32 in the place of theirs)", "", *results.table(
            ["Setup", "Users", "Throughput ×", "Mean ÷", "P95 ÷"],
            [[r["setup"], r["users"], results.number(r["throughput_ratio"], 2), results.number(r["mean_ratio"], 2),
              results.number(r["p95_ratio"], 2)] for r in data["against_fp32"]])]
    gates = {name: s["export"]["int8_agreement"] for name, s in setups.items() if s["export"]["int8_agreement"]}
    if gates:
        lines += ["", "## INT8 accuracy gate at export", "",
                  *(f"- {name}, on this random-weight checkpoint: max |Δ score| {gate['max_abs_delta']:.4f}, mean "
                    f"|Δ score| {gate['mean_abs_delta']:.4f}, top-1 agreement {gate['top1_agreement']:.1%} "
                    f"({gate['top1_strict']:.1%} strict) on {gate['requests']} requests: "
                    f"{'within' if gate['passed'] else 'outside'} the export's limits."
                    for name, gate in gates.items()),
                  "", "Random weights cannot show accuracy (their scores are near-ties that any rounding reorders): "
                  "these figures say nothing about a real model; see docs/models-and-export.md, INT8 on CPU."]
    lines += ["", "## Answers from the response cache", "", *results.table(
        ["Setup", "Requests", "Users", "Requests (Locust)", "Answered from cache (Triton)"],
        [[r.meta["target"], report.requests_kind(r.meta), users, f"{row.requests:,}", row.cache_cell()]
         for r in ours + theirs for users, row in sorted(r.rows.items())])]
    if meta["shape"] == "large":
        rows = [[setup, figure, "the reference deployment's README (not measured here)"]
                for setup, figure in REFERENCE_FIGURES]
        rows += [[f"ours, {name}, {meta['hardware']}", f"{results.number(s['levels'][1]['avg_ms'], 0)} ms mean, P95 "
                  f"{results.number(s['levels'][1]['p95_ms'], 0)} ms, one user, {s['levels'][1]['success_rate']:.1%} "
                  "success", "this run"] for name, s in setups.items() if 1 in s["levels"] and name in measured]
        lines += ["", "## Beside the reference deployment's own figures", "",
                  *results.table(["Setup (StructBERT-large)", "Latency", "Source"], rows)]
    lines += ["", report.render(ours + theirs, report.load_prices(report.DEFAULT_PRICES), 200.0).replace(
        "# Load-test report", "## Full tables")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    baselines = [name for name in args.baselines.split(",") if name]
    unknown = set(baselines) - set(BASELINES)
    try:
        if unknown:
            raise LoadTestError(f"unknown baselines {sorted(unknown)}; choose from {', '.join(BASELINES)}")
        if baselines and not args.baseline_python.is_file():
            raise LoadTestError(f"{args.baseline_python} not found: run `make setup-modelscope`")
        setups = parse_setups(args.setups)
        parse_levels(args.users, "--users")  # checked now, not after the exports
        parse_duration(args.duration)
    except (LoadTestError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    folder = results.new_folder(args.out, "compare", args.shape)
    try:
        ours, theirs, exports = run(args, setups, baselines, folder)
    except LoadTestError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1
    data = summarize(ours, theirs, exports, args)
    results.write(folder, data, render(data, ours, theirs), stem="comparison")
    report.plot(ours + theirs, folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
