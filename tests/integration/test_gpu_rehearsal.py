"""The GPU run rehearsed on this CPU (`make gpu-rehearsal`): the very steps and commands a GPU host runs
(deploy/gpu/bench-on-gpu-host.sh, '-' for the bundle), with a tiny model and short durations, so the script
cannot rot between GPU runs. What only a GPU host has (the bundle's tritonserver, CUDA, nvidia-smi) is replaced
by the local tritonserver and the CPU; the rehearsal's import step checks that the host image and the bundle
hold every package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from zsc_server.triton_process import free_ports

ROOT = Path(__file__).resolve().parents[2]


def rehearsal_env(**extra: str) -> dict[str, str]:
    """This machine's python first on PATH (what the scripts call python3), free ports, no $OUT of the caller's."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               PORTS=",".join(map(str, free_ports(3))), **extra)
    return env


@pytest.mark.slow
def test_the_gpu_run_rehearsed_on_the_cpu_passes_every_step_and_leaves_its_results(tmp_path):
    results, out = tmp_path / "gpu-run", tmp_path / "out"
    out.mkdir()
    done = subprocess.run(["bash", "deploy/gpu/bench-on-gpu-host.sh", "-"], cwd=ROOT, capture_output=True, text=True,
                          timeout=480, env=rehearsal_env(RESULTS=str(results), OUT=str(out)))
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert last.startswith("gpu-run: 11/11 steps ok in ") and "0 wrong/failed" in last, last
    assert "raw encoder, best tokens/s: fp32 padded " in last and ", fp8-emulated packed " in last, last

    summary = json.loads((results / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == ["setup", "imports", "imports-serving", "checkpoint",
                                                     "export", "gpu-tests", "memory", "serve", "bench",
                                                     "loadtest", "stop"]
    bench = summary["bench"]
    assert [level["concurrency"] for level in bench["levels"]] == [1, 4]
    assert all(level["wrong"] == 0 and level["errors"] == 0 and level["pairs_per_s"] > 0
               for level in bench["levels"])
    assert bench["meta"]["runtime"] == "python-torch" and bench["encoder_ceiling"]["pairs_per_s"] > 0
    memory = json.loads((results / "memory.json").read_text())
    # 2 batches x 2 buckets per layout and precision (the CPU runs FP32 for fp16, and emulates fp8)
    assert [(row["precision"], row["layout"]) for row in memory["shapes"]] == [
        (precision, layout) for precision in ("fp32", "fp8-emulated") for layout in ("padded", "packed")
        for _ in range(4)]
    assert all(row["tokens_per_s"] > 0 and row["tokens_per_s"] == pytest.approx(row["pairs_per_s"] * row["sequence"])
               for row in memory["shapes"])
    # the export used the GPU profile's settings, on the CPU
    assert "GPU profile h100" in (results / "05-export.log").read_text()
    assert "[serve] ready:" in (results / "08-serve.log").read_text()
    assert "1 passed" not in (results / "06-gpu-tests.log").read_text()  # collected, skipped without CUDA
    assert "skipped" in (results / "06-gpu-tests.log").read_text()

    with tarfile.open(out / "gpu-run.tar.gz") as tar:
        names = set(tar.getnames())
    expected = {f"gpu-run/{name}" for name in (
        "01-setup.log", "02-imports.log", "03-imports-serving.log", "05-export.log", "08-serve.log",
        "09-bench.log", "10-loadtest.log", "steps.tsv",
        "nvidia-smi-before.txt", "nvidia-smi-after.txt", "memory.md", "summary.md", "summary.json",
        "locust/report.md")}
    assert expected <= names, expected - names
    assert any(name.startswith("gpu-run/bench-") and name.endswith("/results.md") for name in names)
    assert "## Benchmark" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_the_settings_comparison_rehearsed_on_the_cpu_benches_each_variant(tmp_path):
    """deploy/gpu/compare-on-gpu-host.sh with no bundle ('-'): this machine's python and tritonserver, the
    tiny model, three variants of export flags (the padded layout padding every batch to one graph, the packed
    layout, and packed FP8: emulated on the CPU, its gate reporting on random weights); each variant exported,
    served and benched in turn, every answer checked."""
    results = tmp_path / "compare"
    env = rehearsal_env(SHAPE="tiny", CONCURRENCY="1,2", DURATION_S="1")
    env.pop("OUT", None)
    cpu = "--gpu h100 --torch-device cpu"
    fp8 = "--torch-layout packed --precision fp8 --accuracy-gate report --gate-requests 12"
    done = subprocess.run(["bash", "deploy/gpu/compare-on-gpu-host.sh", "-", str(results),
                           f"pad:{cpu} --replay-overhead-tokens 1000000000", f"packed:{cpu} --torch-layout packed",
                           f"fp8:{cpu} {fp8}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    steps = [line.split("\t")[:2] for line in (results / "steps.tsv").read_text().splitlines()]
    assert steps == [[name, "ok"] for name in ("checkpoint", "gpu-tests", "pad-export", "pad-serve", "pad-bench",
                                               "packed-export", "packed-serve", "packed-bench",
                                               "fp8-export", "fp8-serve", "fp8-bench")]
    for name, layout in (("pad", "padded"), ("packed", "packed"), ("fp8", "packed")):
        [bench] = (results / name).glob("bench-*/results.json")
        data = json.loads(bench.read_text())
        assert [level["concurrency"] for level in data["levels"]] == [1, 2]
        assert all(level["wrong"] == 0 and not sum(level["errors"].values()) for level in data["levels"])
        assert f"variant {name}" in data["meta"]["note"]
        [log] = results.glob(f"*-{name}-export.log")
        assert f"validating the plain-torch encoder ({layout} layout" in log.read_text()
    assert "FP8 vs FP32 on 12 requests" in next(results.glob("*-fp8-export.log")).read_text()
    lines = [line.split() for line in done.stdout.splitlines() if line.strip().startswith(("pad ", "packed ", "fp8 "))]
    assert [(words[0], words[1]) for words in lines if words[1] != "raw"] == [
        ("fp8", "c1"), ("fp8", "c2"), ("packed", "c1"), ("packed", "c2"), ("pad", "c1"), ("pad", "c2")]
