"""The GPU measurement in one command, and its rehearsal on a CPU (standard library only: it runs on the
GPU host's own python3 before the bundle is set up).

  python -m loadtest.gpu_run --bundle .gpu                 # on a GPU host (deploy/gpu/bench-on-gpu-host.sh)
  python -m loadtest.gpu_run --rehearse                    # here, on the CPU: the same steps, small sizes

Steps, each with its own time limit, its log, and its exit status; a step that fails or runs out of
time is recorded and the run goes on with every step that does not need it, so a GPU run always brings
back something to learn from:
  setup       unpack the offline bundle (tritonserver, numpy 1.26, clients); rehearsal: the local tritonserver
  imports     what the model side imports (export, memory probe, GPU tests: the host's numpy 2) is there,
              at versions that fit (rehearsal: and on the GPU host)
  imports-serving  likewise for the serving side (tritonserver's Python stubs, bench, Locust: numpy 1.26)
  checkpoint  random weights in the StructBERT-large shape (rehearsal: tiny)
  export      python-torch runtime with the GPU's profile (FP16, CUDA graphs); rehearsal: h100 profile on the CPU
  gpu-tests   pytest -m gpu (the CUDA-graph replay test; skipped without CUDA)
  memory      GPU memory and CUDA-graph time per (batch, sequence bucket) (loadtest.gpu_memory)
  serve       the launcher (make serve) on the export, in the background
  bench       full-ensemble concurrency sweep, every answer checked, raw encoder ceiling (loadtest.bench)
  loadtest    Locust at 1, 5, 10 users on the same server (loadtest.run --report)
  [perf-vs-bench  with --perf-tools: bench's client and perf_analyzer level by level on the same server]
  stop        the server, cleanly
Results (--results): one log per step, nvidia-smi before and after, the server log, memory.md/json, the
bench's results.md/json, Locust's folder, summary.md/json, and a one-line summary printed last. With
--archive, a .tar.gz of the results is rewritten after every step (what comes back if the host is
taken away half way). The whole GPU run is planned for under 8 minutes (--budget-s).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_GPU = ROOT / "deploy" / "gpu"
TRITON_ENV = Path("/tmp/triton-env.sh")  # written by deploy/gpu/setup-host.sh
# also written by setup-host.sh: the host's python3 with the bundle's clients but the host's numpy 2, which
# transformers (through scipy) needs; the serving side's python3 (triton-env.sh) has numpy 1.26 for the stub
MODEL_PYTHON = Path("/tmp/tm/bin/python3")
STOP_RESERVE_S = 60.0  # kept back from the budget so the server is always stopped cleanly


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What differs between the GPU run and its rehearsal: sizes and durations, never the steps."""

    shape: str
    max_length: int
    memory_batches: str
    memory_sequences: str
    bench_concurrency: str
    bench_duration_s: float
    bench_warmup_s: float
    ceiling_s: float
    locust_users: str
    locust_duration: str


GPU_SIZES = Sizes("large", 128, "1,8,32,128,256,512", "16,32,64,128", "1,5,10,32,64,128", 12, 2, 8, "1,5,10", "15s")
REHEARSAL_SIZES = Sizes("tiny", 64, "1,4", "16,32", "1,4", 2, 0.5, 1, "2", "3s")


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    command: tuple[str, ...]
    limit_s: float
    needs: tuple[str, ...] = ()
    background: bool = False  # the server: runs on until `stop`, ready once its log says so


@dataclasses.dataclass
class Outcome:
    name: str
    status: str  # ok, failed, timeout, skipped
    seconds: float
    exit_code: int | None = None
    note: str = ""


def plan(rehearse: bool, bundle: Path | None, work: Path, results: Path, ports: tuple[int, int, int],
         gpu: str = "auto", perf_tools: Path | None = None) -> list[Step]:
    """The run's steps. The rehearsal runs the same steps with the same commands; only sizes, durations,
    the device (--torch-device cpu) and how tritonserver is found differ."""
    sizes = REHEARSAL_SIZES if rehearse else GPU_SIZES
    python = sys.executable if rehearse else "python3"  # on the GPU host: the serving venv (triton-env.sh)
    model_python = sys.executable if rehearse else str(MODEL_PYTHON)
    http, grpc, metrics = ports
    checkpoint, repository = work / "checkpoint", work / "repository"
    if rehearse:
        setup = (python, "-c", "from zsc_server.triton_install import triton_binary, prepare_backends; "
                 "print('rehearsal: the local tritonserver', triton_binary())")
        imports = ("--host-packages", str(DEPLOY_GPU / "host-packages.txt"),
                   "--bundle-requirements", str(DEPLOY_GPU / "bundle-requirements.txt"))
        device = ("--gpu", "h100" if gpu == "auto" else gpu, "--torch-device", "cpu")
        memory_device = ("--device", "cpu")
    else:
        setup = ("bash", str(DEPLOY_GPU / "setup-host.sh"), str(bundle))
        imports = ()
        device = ("--gpu", gpu)
        memory_device = ("--device", "cuda")
    served = ("--grpc-url", f"127.0.0.1:{grpc}", "--metrics-url", f"http://127.0.0.1:{metrics}/metrics")
    steps = [
        Step("setup", setup, 120),
        Step("imports", (model_python, "-m", "loadtest.gpu_imports", "--side", "model", *imports), 90,
             needs=("setup",)),
        Step("imports-serving", (python, "-m", "loadtest.gpu_imports", "--side", "serving", *imports), 90,
             needs=("setup",)),
        Step("checkpoint", (model_python, "-m", "export.random_checkpoint", str(checkpoint), "--shape", sizes.shape,
                            "--layout", "modelscope"), 180, needs=("setup",)),
        Step("export", (model_python, "-m", "export", "--model", str(checkpoint), "--repository", str(repository),
                        "--runtime", "python-torch", "--max-length", str(sizes.max_length), *device),
             300, needs=("checkpoint",)),
        Step("gpu-tests", (model_python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/unit"),
             150, needs=("setup",)),
        Step("memory", (model_python, "-m", "loadtest.gpu_memory",
                        "--model", str(repository / "encoder" / "1" / "model.pt"), "--out", str(results),
                        "--batches", sizes.memory_batches,
                        "--sequences", sizes.memory_sequences, *memory_device), 150, needs=("export",)),
        Step("serve", (python, "-m", "zsc_server.serve", "--repository", str(repository), "--http-port", str(http),
                       "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--front", "off"), 240,
             needs=("export",), background=True),
        # --front off: tritonserver itself, as the earlier runs; GPU memory: nvidia-smi samples (bench)
        Step("bench", (python, "-m", "loadtest.bench", *served, "--http-url", f"127.0.0.1:{http}",
                       "--concurrency", sizes.bench_concurrency, "--duration-s", str(sizes.bench_duration_s),
                       "--warmup-s", str(sizes.bench_warmup_s), "--ceiling-s", str(sizes.ceiling_s),
                       "--out", str(results),
                       "--note", f"random weights in the StructBERT-{sizes.shape} shape"), 240, needs=("serve",)),
        Step("loadtest", (python, "-m", "loadtest.run", "--host", f"http://127.0.0.1:{http}", *served,
                          "--users", sizes.locust_users, "--duration", sizes.locust_duration, "--out", str(results),
                          "--name", "locust", "--report"), 150, needs=("serve",)),
    ]
    if perf_tools:  # optional: it needs perf_analyzer carried along (make perf-tools) and more time
        steps.append(Step("perf-vs-bench", (python, "-m", "loadtest.perf_vs_bench", *served, "--http-url",
                                            f"127.0.0.1:{http}", "--tools", str(perf_tools), "--concurrency",
                                            sizes.bench_concurrency, "--duration-s", str(sizes.bench_duration_s),
                                            "--out", str(results)), 300, needs=("serve",)))
    return steps + [Step("stop", (), 60, needs=("serve",))]


class Runner:
    """Runs the steps in order within the budget; writes each step's log and the summary."""

    def __init__(self, steps: list[Step], results: Path, budget_s: float, archive: Path | None,
                 source_env: bool) -> None:
        self.steps, self.results, self.archive = steps, results, archive
        self.deadline = time.monotonic() + budget_s
        self.source_env = source_env
        self.outcomes: dict[str, Outcome] = {}
        self.server: subprocess.Popen | None = None
        self.started = time.monotonic()

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # the client package is not installed on a GPU host: import it from the checkout
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "client"), env.get("PYTHONPATH", "")])
        return env

    def argv(self, step: Step) -> list[str]:
        if self.source_env and step.name != "setup":
            return ["bash", "-c", f'source {TRITON_ENV} && exec "$@"', "bash", *step.command]
        return list(step.command)

    def run(self) -> dict[str, Outcome]:
        snapshot_gpus(self.results / "nvidia-smi-before.txt")
        try:
            for index, step in enumerate(self.steps, 1):
                outcome = self.run_step(index, step)
                self.outcomes[step.name] = outcome
                print(f"[gpu-run] {step.name}: {outcome.status} in {outcome.seconds:.0f} s"
                      f"{f' ({outcome.note})' if outcome.note else ''}", flush=True)
                self.write_summary()
        finally:
            self.stop_server()
            snapshot_gpus(self.results / "nvidia-smi-after.txt")
            self.write_summary()
        return self.outcomes

    def run_step(self, index: int, step: Step) -> Outcome:
        blocked = [need for need in step.needs if self.outcomes.get(need, Outcome(need, "?", 0)).status != "ok"]
        if blocked:
            return Outcome(step.name, "skipped", 0.0, note=f"needs {', '.join(blocked)}")
        if step.name == "stop":
            began = time.monotonic()
            code = self.stop_server()
            return Outcome(step.name, "ok" if code == 0 else "failed", time.monotonic() - began, code,
                           note=f"the launcher exited with {code}")
        reserve = 0.0 if step.name == "setup" else STOP_RESERVE_S
        remaining = self.deadline - time.monotonic() - reserve
        if remaining < min(step.limit_s, 5):  # no time left to learn anything from it
            return Outcome(step.name, "skipped", 0.0, note="out of time")
        limit = min(step.limit_s, remaining)
        log = self.results / f"{index:02d}-{step.name}.log"
        if step.background:
            return self.start_server(step, log, limit)
        began = time.monotonic()
        with open(log, "w", encoding="utf-8") as out:
            out.write(f"$ {' '.join(step.command)}\n")
            out.flush()
            process = subprocess.Popen(self.argv(step), cwd=ROOT, env=self.environment(), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                kill_group(process)
                return Outcome(step.name, "timeout", time.monotonic() - began, None, note=f"stopped at {limit:.0f} s")
        return Outcome(step.name, "ok" if code == 0 else "failed", time.monotonic() - began, code,
                       note="" if code == 0 else f"exit {code}: {last_line(log)}")

    def start_server(self, step: Step, log: Path, limit: float) -> Outcome:
        began = time.monotonic()
        out = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed with the server, at stop
        out.write(f"$ {' '.join(step.command)}\n")
        out.flush()
        self.server = subprocess.Popen(self.argv(step), cwd=ROOT, env=self.environment(), stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self._server_log = out
        while time.monotonic() - began < limit:
            if "[serve] ready:" in log.read_text(encoding="utf-8", errors="replace"):
                return Outcome(step.name, "ok", time.monotonic() - began, note="ready")
            if self.server.poll() is not None:
                return Outcome(step.name, "failed", time.monotonic() - began, self.server.returncode,
                               note=f"exit {self.server.returncode}: {last_line(log)}")
            time.sleep(0.5)
        self.stop_server()
        return Outcome(step.name, "timeout", time.monotonic() - began, note=f"not ready after {limit:.0f} s")

    def stop_server(self) -> int | None:
        if self.server is None:
            return None
        server, self.server = self.server, None
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)  # the launcher stops tritonserver (its exit timeout: 30 s)
            try:
                server.wait(timeout=45)
            except subprocess.TimeoutExpired:
                kill_group(server)
        kill_group(server)  # whatever is left of its process group (stubs)
        self._server_log.close()
        return server.returncode

    def write_summary(self) -> None:
        summary = summarize(self.outcomes, self.results, time.monotonic() - self.started)
        (self.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        (self.results / "summary.md").write_text(summary_markdown(summary, self.results), encoding="utf-8")
        if self.archive:
            self.archive.parent.mkdir(parents=True, exist_ok=True)
            partial = self.archive.with_name(self.archive.name + ".partial")
            with tarfile.open(partial, "w:gz") as tar:
                tar.add(self.results, arcname=self.results.name)
            partial.replace(self.archive)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def snapshot_gpus(path: Path) -> None:
    if shutil.which("nvidia-smi") is None:
        path.write_text("nvidia-smi: not found (no NVIDIA driver on this host)\n", encoding="utf-8")
        return
    try:
        done = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20, check=False)
        path.write_text(done.stdout + done.stderr, encoding="utf-8")
    except subprocess.TimeoutExpired:
        path.write_text("nvidia-smi: no answer in 20 s\n", encoding="utf-8")


def summarize(outcomes: dict[str, Outcome], results: Path, elapsed_s: float) -> dict:
    summary = {"elapsed_s": elapsed_s, "steps": [dataclasses.asdict(o) for o in outcomes.values()]}
    bench = sorted(results.glob("bench-*/results.json"))
    if bench:
        data = json.loads(bench[-1].read_text(encoding="utf-8"))
        summary["bench"] = {"folder": bench[-1].parent.name, "meta": data["meta"],
                            "levels": [{key: level[key] for key in ("concurrency", "p50_ms", "p99_ms",
                                                                     "requests_per_s", "pairs_per_s", "wrong",
                                                                     "host_share", "encoder_avg_batch")}
                                       | {"errors": sum(level["errors"].values())} for level in data["levels"]],
                            "encoder_ceiling": data["encoder_ceiling"]}
    memory = results / "memory.json"
    if memory.is_file():
        data = json.loads(memory.read_text(encoding="utf-8"))
        fitted = [row for row in data["shapes"] if not row.get("out_of_memory")]
        summary["memory"] = {"device": data["meta"]["device_name"], "weights_mib": data["meta"]["weights_mib"],
                             "shapes": len(data["shapes"]), "out_of_memory": len(data["shapes"]) - len(fitted)}
    return summary


def one_line(summary: dict, results: Path) -> str:
    steps = summary["steps"]
    ok = sum(1 for step in steps if step["status"] == "ok")
    not_ok = ", ".join(f"{s['name']}: {s['status']}" for s in steps if s["status"] != "ok")
    parts = [f"gpu-run: {ok}/{len(steps)} steps ok{f' ({not_ok})' if not_ok else ''} in {summary['elapsed_s']:.0f} s"]
    bench = summary.get("bench")
    if bench and bench["levels"]:
        first, best = bench["levels"][0], max(bench["levels"], key=lambda level: level["pairs_per_s"])
        wrong = sum(level["wrong"] + level["errors"] for level in bench["levels"])
        parts.append(f"bench: c{first['concurrency']} p50 {first['p50_ms']:.1f} ms, best {best['pairs_per_s']:.0f} "
                     f"pairs/s at c{best['concurrency']}, {wrong} wrong/failed")
        if bench["encoder_ceiling"]:
            parts[-1] += f", raw encoder {bench['encoder_ceiling']['pairs_per_s']:.0f} pairs/s"
    if summary.get("memory"):
        memory = summary["memory"]
        parts.append(f"memory: {memory['shapes']} shapes on {memory['device']}, "
                     f"{memory['out_of_memory']} out of memory")
    parts.append(f"results: {results}")
    return "; ".join(parts)


def summary_markdown(summary: dict, results: Path) -> str:
    lines = ["# GPU run", "", one_line(summary, results), "", "| step | status | seconds | note |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {s['note']} |" for s in summary["steps"]]
    for section in (sorted(results.glob("bench-*/results.md"))[-1:] + [results / "memory.md"]):
        if section.is_file():
            lines += ["", section.read_text(encoding="utf-8").replace("\n# ", "\n## ", 1).replace("# ", "## ", 1)]
    return "\n".join(lines) + "\n"


def free_ports(count: int) -> tuple[int, ...]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return tuple(s.getsockname()[1] for s in sockets)
    finally:
        for s in sockets:
            s.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.gpu_run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--bundle", type=Path, help="the offline bundle (deploy/gpu/make-bundle.sh) on a GPU host")
    mode.add_argument("--rehearse", action="store_true",
                      help="run the same steps here on the CPU with small sizes (tiny model, short durations)")
    parser.add_argument("--results", type=Path, default=None,
                        help="results folder (default: loadtest/results/gpu-run-<date>[-rehearsal])")
    parser.add_argument("--archive", type=Path, default=None,
                        help="also write the results as this .tar.gz, rewritten after every step")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="the whole run's time limit; each step also has its own (default: 480)")
    parser.add_argument("--perf-tools", type=Path, default=None,
                        help="also run make perf-vs-bench's cross-check (bench's client vs perf_analyzer) on the "
                             "same server, with the perf_analyzer in this folder (make perf-tools; not by default)")
    parser.add_argument("--gpu", default="auto",
                        help="GPU profile for the export (default: auto, the card nvidia-smi lists; "
                             "the rehearsal uses h100's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = args.results or ROOT / "loadtest" / "results" / f"gpu-run-{stamp}{'-rehearsal' if args.rehearse else ''}"
    results.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle.resolve() if args.bundle else None
    with tempfile.TemporaryDirectory(prefix="zsc-gpu-run-") as work:
        steps = plan(args.rehearse, bundle, Path(work), results.resolve(), free_ports(3), args.gpu,
                     args.perf_tools.resolve() if args.perf_tools else None)
        (results / "plan.json").write_text(json.dumps([dataclasses.asdict(s) for s in steps], indent=2) + "\n",
                                           encoding="utf-8")
        runner = Runner(steps, results.resolve(), args.budget_s, args.archive, source_env=not args.rehearse)
        outcomes = runner.run()
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    print(one_line(summary, results), flush=True)
    return 0 if all(outcome.status == "ok" for outcome in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
