"""make analyze's parts that need no Model Analyzer run: the config it gets (our server's flags and
environment, no response cache, the encoder's batch floor), the perf_analyzer wrapper, the summary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from loadtest import analyze
from loadtest.perf_tools import DEFAULT_DIR, ToolError, locate


def write_repository(root: Path, encoder_max_batch: int) -> Path:
    (root / "encoder").mkdir(parents=True)
    (root / "encoder" / "config.pbtxt").write_text(f'name: "encoder"\nmax_batch_size: {encoder_max_batch}\n')
    (root / "zero_shot").mkdir()
    (root / "zero_shot" / "config.pbtxt").write_text(
        'name: "zero_shot"\nplatform: "ensemble"\nparameters {\n  key: "export_runtime"\n  value {\n'
        '    string_value: "python-ort"\n  }\n}\nparameters {\n  key: "export_max_length"\n  value {\n'
        '    string_value: "64"\n  }\n}\n')
    return root


@pytest.mark.parametrize("exported, floor", [(65, 128), (64, 64), (257, 512), (1, 1)])
def test_model_analyzer_never_tries_an_encoder_batch_below_one_requests_pairs(tmp_path, exported, floor):
    assert analyze.encoder_batch_floor(write_repository(tmp_path, exported)) == floor


def test_model_analyzer_config_runs_our_server_without_the_response_cache(tmp_path):
    repository = write_repository(tmp_path / "repo", 65)
    assert analyze.export_facts(repository) == {"runtime": "python-ort", "max_length": "64"}
    args = analyze.build_parser().parse_args(["--repository", str(repository), "--max-concurrency", "8",
                                              "--latency-budget-ms", "200"])
    env = {"PATH": "/venv/bin", "LD_LIBRARY_PATH": "/libs", "PYTHONPATH": "/project", "HOME": "/root"}
    triton = tmp_path / "tritonserver" / "bin" / "tritonserver"
    config = analyze.analyzer_config(args, tmp_path / "work", tmp_path / "backends", [1, 2, 3], env, triton,
                                     tmp_path / "perf_analyzer", tmp_path / "input.json", tmp_path / "out")
    assert config["run_config_search_mode"] == "quick" and config["triton_launch_mode"] == "local"
    assert config["triton_server_flags"] == {"backend-directory": str(tmp_path / "backends"),
                                             "cache-directory": str(tmp_path / "tritonserver" / "caches")}
    assert config["triton_server_environment"] == {key: env[key] for key in ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH")}
    assert (config["run_config_search_min_model_batch_size"], config["run_config_search_max_model_batch_size"]) \
        == (128, 512)
    assert config["cpu_only_composing_models"] == ["preprocess", "encoder", "postprocess"]
    assert config["latency_budget"] == 200 and config["run_config_search_max_concurrency"] == 8
    assert config["perf_analyzer_flags"] == {"input-data": str(tmp_path / "input.json")}
    assert config["triton_grpc_endpoint"] == "127.0.0.1:2"


def test_model_analyzer_runs_perf_analyzer_through_a_wrapper_that_finds_its_libraries(tmp_path, monkeypatch):
    monkeypatch.delenv("PERF_ANALYZER", raising=False)
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    try:
        locate()
    except ToolError as exc:
        pytest.fail(f"{exc} (make test installs it)")
    wrapper = analyze.perf_analyzer_wrapper(DEFAULT_DIR, tmp_path)
    done = subprocess.run([str(wrapper), "--version"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and "Perf Analyzer Version 2.51.0" in done.stdout + done.stderr


def test_model_analyzer_summary_lists_its_configurations_best_first(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "metrics-model-inference.csv").write_text(
        "Model,Batch,Concurrency,Model Config Path,Instance Group,Max Batch Size,Satisfies Constraints,"
        "Throughput (infer/sec),p99 Latency (ms)\n"
        'zero_shot,1,2,"zero_shot_config_0: preprocess_config_0, encoder_config_0, postprocess_config_0",'
        '"1:CPU,1:CPU,1:CPU","0,128,0",Yes,135.3,53.5\n'
        'zero_shot,1,4,"zero_shot_config_default: preprocess_config_default, encoder_config_default, '
        'postprocess_config_default","2:CPU,1:CPU,1:CPU","0,65,0",Yes,236.5,53.2\n')
    rows = analyze.read_measurements(tmp_path)
    assert [row["Throughput (infer/sec)"] for row in rows] == ["236.5", "135.3"]
    meta = {"started": "now", "model": "m", "note": "", "runtime": "python-ort", "precision": "fp32", "max_length": 64,
            "hardware": "CPU", "model_analyzer": "Model Analyzer 1.44.0", "max_instances": 2, "batch_floor": 128,
            "batch_ceiling": 512, "max_concurrency": 16, "latency_budget_ms": 0.0}
    text = analyze.summary(meta, rows)
    assert "without the response cache" in text and "encoder max_batch_size 128-512" in text
    assert text.index("| 236.5 |") < text.index("| 135.3 |")
