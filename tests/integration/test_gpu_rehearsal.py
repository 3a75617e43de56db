"""The GPU run rehearsed on this CPU (`make gpu-rehearsal`): the very steps and commands a GPU host runs
(loadtest.gpu_run), with a tiny model and short durations, so the script cannot rot between GPU runs.
What only a GPU host has (the bundle's tritonserver, CUDA, nvidia-smi) is replaced by the local tritonserver
and the CPU; the rehearsal's import step checks that the host image and the bundle hold every package."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import pytest


@pytest.mark.slow
def test_the_gpu_run_rehearsed_on_the_cpu_passes_every_step_and_leaves_its_results(tmp_path):
    results, archive = tmp_path / "gpu-run", tmp_path / "out" / "gpu-run.tar.gz"
    done = subprocess.run([sys.executable, "-m", "loadtest.gpu_run", "--rehearse", "--results", str(results),
                           "--archive", str(archive)], capture_output=True, text=True, timeout=480)
    last = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert last.startswith("gpu-run: 10/10 steps ok in ") and "0 wrong/failed" in last, last

    summary = json.loads((results / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == ["setup", "imports", "checkpoint", "export", "gpu-tests",
                                                     "memory", "serve", "bench", "loadtest", "stop"]
    bench = summary["bench"]
    assert [level["concurrency"] for level in bench["levels"]] == [1, 4]
    assert all(level["wrong"] == 0 and level["errors"] == 0 and level["pairs_per_s"] > 0
               for level in bench["levels"])
    assert bench["meta"]["runtime"] == "python-torch" and bench["encoder_ceiling"]["pairs_per_s"] > 0
    memory = json.loads((results / "memory.json").read_text())
    assert len(memory["shapes"]) == 4 and all(row["pairs_per_s"] > 0 for row in memory["shapes"])
    # the export used the GPU profile's settings, on the CPU
    assert "GPU profile h100" in (results / "04-export.log").read_text()
    assert "[serve] ready:" in (results / "07-serve.log").read_text()
    assert "1 passed" not in (results / "05-gpu-tests.log").read_text()  # collected, skipped without CUDA
    assert "skipped" in (results / "05-gpu-tests.log").read_text()

    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    expected = {f"gpu-run/{name}" for name in (
        "01-setup.log", "02-imports.log", "04-export.log", "07-serve.log", "08-bench.log", "09-loadtest.log",
        "nvidia-smi-before.txt", "nvidia-smi-after.txt", "memory.md", "summary.md", "summary.json", "plan.json",
        "locust/report.md")}
    assert expected <= names, expected - names
    assert any(name.startswith("gpu-run/bench-") and name.endswith("/results.md") for name in names)
    assert "## Benchmark" in (results / "summary.md").read_text()
