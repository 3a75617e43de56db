"""The GPU run's plan and runner (loadtest.gpu_run), and its import check (loadtest.gpu_imports), without a
GPU: the rehearsal itself runs in tests/integration/test_gpu_rehearsal.py."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from loadtest import gpu_imports
from loadtest.gpu_run import DEPLOY_GPU, GPU_SIZES, MODEL_PYTHON, Runner, Step, one_line, plan


def plans(tmp_path: Path):
    args = dict(work=tmp_path / "work", results=tmp_path / "results", ports=(1, 2, 3))
    return plan(False, tmp_path / "bundle", **args), plan(True, None, **args)


def test_the_rehearsal_runs_the_gpu_runs_steps_with_the_same_programs(tmp_path):
    gpu, rehearsal = plans(tmp_path)
    assert [s.name for s in gpu] == [s.name for s in rehearsal] == [
        "setup", "imports", "imports-serving", "checkpoint", "export", "gpu-tests", "memory", "serve", "bench",
        "loadtest", "stop"]
    for on_gpu, rehearsed in zip(gpu, rehearsal):
        assert (on_gpu.needs, on_gpu.limit_s, on_gpu.background) == (rehearsed.needs, rehearsed.limit_s,
                                                                     rehearsed.background)
        if on_gpu.name not in ("setup", "stop"):  # the same module, run by the GPU host's pythons / this one
            assert on_gpu.command[1:3] == rehearsed.command[1:3], on_gpu.name
            assert rehearsed.command[0] == sys.executable
    # on the GPU host, transformers (checkpoint, export, the GPU tests) needs the host's numpy 2, through
    # scipy, and tritonserver's Python stub needs numpy 1.26: two interpreters, which setup-host.sh makes
    by_name = {s.name: s for s in gpu}
    model_side = {"imports", "checkpoint", "export", "gpu-tests", "memory"}
    assert {name for name, s in by_name.items() if s.command[:1] == (str(MODEL_PYTHON),)} == model_side
    assert {name for name, s in by_name.items() if s.command[:1] == ("python3",)} == {
        "imports-serving", "serve", "bench", "loadtest"}
    assert by_name["imports"].command[3:5] == ("--side", "model")
    assert by_name["imports-serving"].command[3:5] == ("--side", "serving")
    assert f"export MODEL_PYTHON={MODEL_PYTHON}" in (DEPLOY_GPU / "setup-host.sh").read_text()
    export = {s.name: s for s in gpu}["export"].command
    assert export[export.index("--gpu") + 1] == "auto" and "--torch-device" not in export
    rehearsed_export = {s.name: s for s in rehearsal}["export"].command
    assert rehearsed_export[rehearsed_export.index("--torch-device") + 1] == "cpu"
    assert {s.name: s for s in gpu}["setup"].command[:2] == ("bash", str(DEPLOY_GPU / "setup-host.sh"))


def test_the_gpu_run_measures_what_the_gpu_issue_asks_within_its_8_minutes():
    assert GPU_SIZES.shape == "large" and GPU_SIZES.bench_concurrency == "1,5,10,32,64,128"
    assert GPU_SIZES.locust_users == "1,5,10"
    levels = len(GPU_SIZES.bench_concurrency.split(","))
    bench_s = levels * (GPU_SIZES.bench_duration_s + GPU_SIZES.bench_warmup_s) + GPU_SIZES.ceiling_s
    locust_s = len(GPU_SIZES.locust_users.split(",")) * (float(GPU_SIZES.locust_duration.rstrip("s")) + 10)
    # measured on the CPU rehearsal: the rest (setup, checkpoint, export, tests, memory, start) ~ 4 min on a GPU host
    assert bench_s + locust_s < 240


def step(name: str, code: str, limit_s: float = 30, needs: tuple[str, ...] = ()) -> Step:
    return Step(name, (sys.executable, "-c", code), limit_s, needs)


def test_a_step_that_fails_or_overruns_is_recorded_and_the_run_goes_on(tmp_path):
    results, archive = tmp_path / "results", tmp_path / "out" / "run.tar.gz"
    results.mkdir()
    steps = [
        step("first", "print('hello')"),
        step("slow", "import time; print('sleeping', flush=True); time.sleep(60)", limit_s=1),
        step("after-slow", "print('x')", needs=("slow",)),
        step("broken", "import sys; print('it broke'); sys.exit(4)"),
        step("last", "print('still runs')", needs=("first",)),
    ]
    began = time.monotonic()
    outcomes = Runner(steps, results, budget_s=300, archive=archive, source_env=False).run()
    assert time.monotonic() - began < 20
    assert {name: o.status for name, o in outcomes.items()} == {
        "first": "ok", "slow": "timeout", "after-slow": "skipped", "broken": "failed", "last": "ok"}
    assert outcomes["broken"].exit_code == 4 and "it broke" in outcomes["broken"].note
    assert "needs slow" in outcomes["after-slow"].note
    assert "sleeping" in (results / "02-slow.log").read_text()
    summary = json.loads((results / "summary.json").read_text())
    line = one_line(summary, results)
    assert line.startswith("gpu-run: 2/5 steps ok (slow: timeout, after-slow: skipped, broken: failed)")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"results/01-first.log", "results/04-broken.log", "results/summary.md", "results/nvidia-smi-before.txt",
            "results/nvidia-smi-after.txt"} <= names


def test_steps_past_the_budget_are_skipped_not_started(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    outcomes = Runner([step("a", "print(1)"), step("b", "print(2)")], results, budget_s=30, archive=None,
                      source_env=False).run()  # less than the reserve kept for stopping the server
    assert [o.status for o in outcomes.values()] == ["skipped", "skipped"]
    assert outcomes["a"].note == "out of time"


def test_the_import_check_names_a_package_neither_the_host_nor_the_bundle_has(tmp_path):
    bundle = tmp_path / "bundle-requirements.txt"
    bundle.write_text("\n".join(line for line in (DEPLOY_GPU / "bundle-requirements.txt").read_text().splitlines()
                                if not line.startswith("locust")))
    # in a process of its own: the check imports Locust, which monkey-patches the standard library for gevent
    done = subprocess.run([sys.executable, "-m", "loadtest.gpu_imports", "--host-packages",
                           str(DEPLOY_GPU / "host-packages.txt"), "--bundle-requirements", str(bundle)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    problems = [line for line in done.stdout.splitlines() if line.startswith("PROBLEM")]
    assert any(line.startswith("PROBLEM locust: neither the GPU host") for line in problems), problems


def test_requirement_closure_follows_extras_and_skips_other_platforms():
    closure = gpu_imports.requirement_closure(["tritonclient[grpc,http]==2.73.0"])
    assert {"tritonclient", "grpcio", "geventhttpclient", "gevent", "protobuf", "python-rapidjson"} <= closure
    assert "perf-analyzer" not in closure and "cuda-python" not in closure  # extras not asked for
    assert "tritonclient" in gpu_imports.requirement_names(DEPLOY_GPU / "bundle-requirements.txt")


def test_the_perf_analyzer_cross_check_is_an_optional_step_before_stop(tmp_path):
    steps = plan(False, tmp_path / "bundle", tmp_path / "work", tmp_path / "results", (1, 2, 3),
                 perf_tools=tmp_path / "tools")
    assert [s.name for s in steps][-3:] == ["loadtest", "perf-vs-bench", "stop"]
    cross_check = steps[-2]
    assert cross_check.needs == ("serve",) and cross_check.command[1:3] == ("-m", "loadtest.perf_vs_bench")
    assert "--tools" in cross_check.command and "127.0.0.1:2" in cross_check.command
