"""The GPU run's step runner (deploy/gpu/steps.sh) and its import check (deploy.gpu_imports), without a GPU:
the rehearsal of the whole run is tests/integration/test_gpu_rehearsal.py."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import time
from pathlib import Path

from deploy import gpu_imports, gpu_summary

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_GPU = ROOT / "deploy" / "gpu"


def run_steps(tmp_path: Path, script: str, budget_s: int = 300) -> subprocess.CompletedProcess:
    results = tmp_path / "results"
    env = {"PATH": "/usr/bin:/bin", "RESULTS": str(results), "BUDGET_S": str(budget_s),
           "ARCHIVE": str(tmp_path / "out" / "run.tar.gz")}
    return subprocess.run(["bash", "-c", f"source deploy/gpu/steps.sh\n{script}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_step_that_fails_or_overruns_is_recorded_and_the_run_goes_on(tmp_path):
    began = time.monotonic()
    done = run_steps(tmp_path, """
step first 30 '' echo hello
step slow 1 '' bash -c 'echo sleeping; sleep 60'
step after-slow 30 slow echo x
step broken 30 '' bash -c 'echo it broke; exit 4'
step last 30 first echo still runs
""")
    assert time.monotonic() - began < 20, done.stdout
    results = tmp_path / "results"
    steps = gpu_summary.read_steps(results)
    assert [(s["name"], s["status"]) for s in steps] == [
        ("first", "ok"), ("slow", "timeout"), ("after-slow", "skipped"), ("broken", "failed"), ("last", "ok")]
    assert steps[3]["note"] == "exit 4: it broke" and steps[2]["note"] == "needs slow"
    assert "sleeping" in (results / "02-slow.log").read_text()
    assert "[gpu-run] broken: failed" in done.stdout
    line = gpu_summary.one_line(gpu_summary.summarize(results), results)
    assert line.startswith("gpu-run: 2/5 steps ok (slow: timeout, after-slow: skipped, broken: failed)")
    with tarfile.open(tmp_path / "out" / "run.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"results/01-first.log", "results/04-broken.log", "results/05-last.log", "results/steps.tsv"} <= names


def test_steps_past_the_budget_are_skipped_not_started(tmp_path):
    # less than the reserve kept for stopping the server
    run_steps(tmp_path, "step a 30 '' touch a-ran\nstep b 30 '' echo 2", budget_s=30)
    steps = gpu_summary.read_steps(tmp_path / "results")
    assert [(s["status"], s["note"]) for s in steps] == [("skipped", "out of time")] * 2
    assert not (ROOT / "a-ran").exists()


def test_the_server_step_waits_for_ready_and_stop_reports_the_launchers_exit(tmp_path):
    launcher = "echo starting; sleep 0.3; echo '[serve] ready: yes'; trap 'exit 3' TERM; while :; do sleep 0.1; done"
    run_steps(tmp_path, f"serve_step serve 20 '' bash -c \"{launcher}\"\nstep use 10 serve echo used\nstop_step stop\n"
                        "serve_step again 20 '' bash -c 'echo oops; exit 7'")
    steps = gpu_summary.read_steps(tmp_path / "results")
    assert [(s["name"], s["status"]) for s in steps] == [("serve", "ok"), ("use", "ok"), ("stop", "failed"),
                                                         ("again", "failed")]
    assert steps[2]["note"] == "the launcher exited with 3" and steps[3]["note"] == "exit 7: oops"


def test_the_rehearsal_and_the_gpu_run_are_one_script_that_differs_in_sizes_only():
    script = (DEPLOY_GPU / "bench-on-gpu-host.sh").read_text()
    rehearsal, gpu = script.split('if [ "$BUNDLE" = - ]; then')[1].split("\nelse\n")
    gpu = gpu.split("\nfi\n")[0]
    assigned = {word.split("=")[0] for word in rehearsal.split() if "=" in word and word[0].isupper()}
    assert assigned == {word.split("=")[0] for word in gpu.split() if "=" in word and word[0].isupper()} | {
        "MODEL_PYTHON"}  # the GPU host's comes from setup-host.sh
    assert "export MODEL_PYTHON=" in (DEPLOY_GPU / "setup-host.sh").read_text()
    # the measurement: StructBERT-large, the 1-128 sweep and Locust at 1/5/10 users, within 8 minutes
    assert "SHAPE=large" in gpu and "CONCURRENCY=1,5,10,32,64,128" in gpu and "USERS=1,5,10" in gpu
    bench_s = 6 * (12 + 2) + 8
    locust_s = 3 * (15 + 10)
    assert "DURATION_S=12 WARMUP_S=2 CEILING_S=8" in gpu and "LOCUST_DURATION=15s" in gpu
    assert bench_s + locust_s < 240 and "BUDGET_S:-480" in script


def test_the_import_check_names_a_package_neither_the_host_nor_the_bundle_has(tmp_path):
    bundle = tmp_path / "bundle-requirements.txt"
    bundle.write_text("\n".join(line for line in (DEPLOY_GPU / "bundle-requirements.txt").read_text().splitlines()
                                if not line.startswith("locust")))
    # in a process of its own: the check imports Locust, which monkey-patches the standard library for gevent
    done = subprocess.run([sys.executable, "-m", "deploy.gpu_imports", "--host-packages",
                           str(DEPLOY_GPU / "host-packages.txt"), "--bundle-requirements", str(bundle)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    problems = [line for line in done.stdout.splitlines() if line.startswith("PROBLEM")]
    assert any(line.startswith("PROBLEM locust: neither the GPU host") for line in problems), problems


def test_requirement_closure_follows_extras_and_skips_other_platforms():
    closure = gpu_imports.requirement_closure(["tritonclient[grpc,http]==2.73.0"])
    assert {"tritonclient", "grpcio", "geventhttpclient", "gevent", "protobuf", "python-rapidjson"} <= closure
    assert "perf-analyzer" not in closure and "cuda-python" not in closure  # extras not asked for
    assert "tritonclient" in gpu_imports.requirement_names(DEPLOY_GPU / "bundle-requirements.txt")
