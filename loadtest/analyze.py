"""`make analyze`: Triton Model Analyzer (the triton-model-analyzer package, in .venv-model-analyzer) on the
exported ensemble, launching the local tritonserver itself (its local launch mode) and measuring with the
perf_analyzer of `make perf-tools`.

  python -m loadtest.analyze --repository model_repository [--max-concurrency 16] [--latency-budget-ms 200]

Model Analyzer's quick search varies the composing models' instance counts, the encoder's max_batch_size
(with dynamic batching) and the request concurrency, measures each configuration with perf_analyzer and
ranks them by throughput (within --latency-budget-ms on p99 where given). What this runner sets for it,
and why:
- tritonserver: the one `make serve` runs, with its backend directory (the Python stub), cache directory
  and environment (PATH, LD_LIBRARY_PATH, PYTHONPATH), from zsc_server.serve;
- no response cache: Model Analyzer replays the same input data for every configuration and level, so
  a cache would answer the repeats; its server runs without --cache-config;
- the encoder's max_batch_size never below the exported one (rounded up to a power of two): one request
  sends all its label pairs to the encoder as one batch, and a smaller limit refuses requests;
- perf_analyzer's input: distinct workload requests (its random data is not UTF-8 text).
The report folder (loadtest/results/analyze-...) holds Model Analyzer's export (reports/summaries/
zero_shot/result_summary.html, results/metrics-model-inference.csv, plots), its log, the config it ran
with, and summary.md: the conditions and the measured configurations, best first.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtest import results
from loadtest.perf_data import MODEL, input_data
from loadtest.perf_tools import DEFAULT_DIR, ToolError, locate
from loadtest.workload import Workload

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL_ANALYZER = PROJECT_ROOT / ".venv-model-analyzer" / "bin" / "model-analyzer"
COMPOSING = ("preprocess", "encoder", "postprocess")


def encoder_batch_floor(repository: Path) -> int:
    """The exported encoder's max_batch_size rounded up to a power of two: the least max_batch_size Model
    Analyzer may try (its quick search steps through powers of two)."""
    config = (Path(repository) / "encoder" / "config.pbtxt").read_text(encoding="utf-8")
    match = re.search(r"^max_batch_size:\s*(\d+)", config, re.M)
    if not match:
        raise ValueError(f"{repository}/encoder/config.pbtxt has no max_batch_size")
    return 1 << max(0, int(match.group(1)) - 1).bit_length()


def export_facts(repository: Path) -> dict[str, str]:
    """model, runtime, precision, max_length as the export wrote them into the ensemble's config."""
    config = (Path(repository) / MODEL / "config.pbtxt").read_text(encoding="utf-8")
    pairs = re.findall(r'key:\s*"export_(\w+)"\s*value\s*\{\s*string_value:\s*"([^"]*)"', config)
    return dict(pairs)


def perf_analyzer_wrapper(tools: Path, folder: Path) -> Path:
    """Model Analyzer runs perf_analyzer by path with its own environment: a script that puts the tools'
    libraries on the library path first."""
    tool = locate(tools)
    library_path = tool.env.get("LD_LIBRARY_PATH", "").split(":")[0]
    wrapper = folder / "perf_analyzer"
    wrapper.write_text("#!/bin/sh\n"
                       f'LD_LIBRARY_PATH="{library_path}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" '
                       f'exec "{tool.binary}" "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    return wrapper


def analyzer_config(args, work: Path, backends: Path, ports: list[int], server_env: dict[str, str],
                    triton: Path, wrapper: Path, data: Path, export: Path) -> dict:
    http, grpc, metrics = ports
    floor = encoder_batch_floor(args.repository)
    config = {
        "model_repository": str(Path(args.repository).resolve()),
        "profile_models": {MODEL: {}},
        # the only mode Model Analyzer 1.44 takes ensembles in ("Brute search mode is not supported for
        # ensemble models"), and one that always searches
        "run_config_search_mode": "quick",
        "cpu_only_composing_models": list(COMPOSING) if args.cpu_only else [],
        "run_config_search_max_concurrency": args.max_concurrency,
        "run_config_search_max_instance_count": args.max_instances,
        "run_config_search_min_model_batch_size": floor,
        "run_config_search_max_model_batch_size": floor * args.batch_steps,
        "triton_launch_mode": "local",
        "triton_server_path": str(triton),
        "triton_server_flags": {"backend-directory": str(backends),
                                "cache-directory": str(triton.parents[1] / "caches")},
        "triton_server_environment": {key: server_env[key] for key in ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH")},
        "triton_http_endpoint": f"127.0.0.1:{http}", "triton_grpc_endpoint": f"127.0.0.1:{grpc}",
        "triton_metrics_url": f"http://127.0.0.1:{metrics}/metrics",
        "triton_output_path": str(export / "tritonserver.log"),
        "perf_analyzer_path": str(wrapper),
        "perf_analyzer_flags": {"input-data": str(data)},
        "output_model_repository_path": str(work / "output-repository"),
        "override_output_model_repository": True,
        "checkpoint_directory": str(work / "checkpoints"),
        "export_path": str(export),
    }
    if args.latency_budget_ms:
        config["latency_budget"] = args.latency_budget_ms
    return config


def read_measurements(export: Path) -> list[dict[str, str]]:
    path = export / "results" / "metrics-model-inference.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return sorted(rows, key=lambda row: -float(row.get("Throughput (infer/sec)") or 0))


def summary(meta: dict, rows: list[dict[str, str]]) -> str:
    budget = f", p99 budget {meta['latency_budget_ms']:g} ms" if meta["latency_budget_ms"] else ""
    cells = [[f"{float(row['Throughput (infer/sec)']):.1f}", f"{float(row['p99 Latency (ms)']):.1f}",
              *(row[key] for key in ("Concurrency", "Model Config Path", "Instance Group", "Max Batch Size",
                                     "Satisfies Constraints"))] for row in rows]
    lines = [f"# Model Analyzer {meta['started']}", "",
             f"{results.served_line(meta)}; {meta['model_analyzer']}, quick search on "
             f"`zero_shot`: instances per composing model up to {meta['max_instances']}, encoder max_batch_size "
             f"{meta['batch_floor']}-{meta['batch_ceiling']} with dynamic batching, concurrency up to "
             f"{meta['max_concurrency']}{budget}; tritonserver launched by Model Analyzer (local mode) without the "
             "response cache; its perf_analyzer runs (count windows, gRPC) replay the same distinct workload "
             "requests for every configuration; answers unchecked.", "",
             *results.table(["throughput (infer/s)", "p99 ms", "concurrency", "configuration",
                             "instances (pre, enc, post)", "max_batch_size (pre, enc, post)", "within constraints"],
                            cells or [["no measurement: see model-analyzer.log", *[""] * 6]]),
             "", "Model Analyzer's own reports: reports/summaries/zero_shot/result_summary.html, "
             "reports/detailed/*/detailed_report.html; every measurement: results/metrics-model-inference.csv; "
             "the configurations it measured: configs/<name>/config.pbtxt."]
    return "\n".join(lines) + "\n"


def keep_configs(repository: Path, target: Path) -> None:
    """The config.pbtxt of every configuration Model Analyzer wrote (not the model files it copied)."""
    for config in sorted(repository.glob("*/config.pbtxt")):
        (target / config.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(config, target / config.parent.name / "config.pbtxt")


def build_parser() -> argparse.ArgumentParser:
    parser = results.parser("analyze", __doc__, label_help="perf_analyzer's input: fresh (default), sets or fixed "
                            "labels (the requests are distinct either way)")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--model-analyzer", type=Path, default=MODEL_ANALYZER,
                        help="its executable (make setup-model-analyzer; default: %(default)s)")
    parser.add_argument("--tools", type=Path, default=DEFAULT_DIR, help="perf_analyzer's folder (make perf-tools)")
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--max-instances", type=int, default=2, help="instances per composing model")
    parser.add_argument("--batch-steps", type=int, default=4,
                        help="encoder max_batch_size up to this many times the exported one (default: 4)")
    parser.add_argument("--latency-budget-ms", type=float, default=0.0, help="p99 constraint (default: none)")
    parser.add_argument("--gpu", dest="cpu_only", action="store_false",
                        help="let the composing models take GPU instances (default: CPU instances only)")
    parser.add_argument("--requests", type=int, default=3000, help="distinct requests in perf_analyzer's input")
    return parser


def analyzer_version(executable: Path) -> str:
    site = list(Path(executable).resolve().parents[1].glob("lib/python*/site-packages"))
    dists = sorted(site[0].glob("triton_model_analyzer-*.dist-info")) if site else []
    return f"Model Analyzer {dists[0].name.removesuffix('.dist-info').split('-')[1]}" if dists else "Model Analyzer"


def run(args) -> tuple[Path, int]:
    from zsc_server.triton_install import check_numpy, prepare_backends, server_environment, triton_binary
    from zsc_server.triton_process import free_ports

    if not Path(args.model_analyzer).is_file():
        raise ToolError(f"{args.model_analyzer} is missing: run `make setup-model-analyzer`")
    check_numpy()
    facts = export_facts(args.repository)
    floor = encoder_batch_floor(args.repository)
    meta = results.served_meta(facts, model_analyzer=analyzer_version(args.model_analyzer),
                               max_instances=args.max_instances, max_concurrency=args.max_concurrency,
                               batch_floor=floor, batch_ceiling=floor * args.batch_steps,
                               latency_budget_ms=args.latency_budget_ms, note=args.note)
    folder = results.new_folder(args.out, "analyze", meta["hardware"], meta["runtime"], meta["precision"])
    with tempfile.TemporaryDirectory(prefix="zsc-analyze-") as scratch:
        work = Path(scratch)
        sampler = Workload.load(args.workload).sampler(args.label_mode, distinct=True)
        data = work / "input.json"
        data.write_text(json.dumps(input_data([sampler.next() for _ in range(args.requests)]), ensure_ascii=False),
                        encoding="utf-8")
        config = analyzer_config(args, work, prepare_backends(work / "backends"), free_ports(3),
                                 server_environment(), triton_binary(), perf_analyzer_wrapper(args.tools, work),
                                 data, folder)
        (folder / "config.yaml").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")  # JSON is YAML
        with open(folder / "model-analyzer.log", "w", encoding="utf-8") as log:
            process = subprocess.Popen([str(args.model_analyzer), "profile", "-f", str(folder / "config.yaml")],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})  # its progress as it goes
            for line in process.stdout:
                log.write(line)
                if line.startswith("[Model Analyzer]") and "WARNING: No GPU metric" not in line:
                    print(line, end="", flush=True)
            code = process.wait()
        keep_configs(work / "output-repository", folder / "configs")
    shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    (folder / "summary.md").write_text(summary(meta, read_measurements(folder)), encoding="utf-8")
    print((folder / "summary.md").read_text())
    print(f"[analyze] model-analyzer exited with {code}; results in {folder}")
    return folder, code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _folder, code = run(args)
    except (OSError, ValueError, ToolError) as exc:
        print(f"analyze: {exc}", file=sys.stderr)
        return 2
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
