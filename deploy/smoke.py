"""`make compose-smoke`: the compose stack built and run on this machine's Docker engine, the way a user runs it.

From a fresh clone with Docker, Compose v2 and debootstrap: the base image and the wheelhouse
(deploy/images.py), every image built with no network inside the build, `make export`, then
`docker compose up -d --wait` and the checks below through the ports published on 127.0.0.1, and at the end
`docker compose down -v`, which must leave nothing of the project behind. Prints a table: step, status,
seconds. Exit status 0 only when every step is ok; 2 when a tool is missing (named, with how to get it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy import images

ROOT = images.ROOT
PROJECT = "zero-shot-triton"  # docker-compose.yml's name:
PROFILES = ("export", "webui", "loadtest", "monitoring")
HTTP, GRPC, METRICS, WEBUI = "127.0.0.1:8000", "127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:7860"
PROMETHEUS = "127.0.0.1:9090"
SCRAPE_WAIT_S = 30.0  # deploy/prometheus/prometheus.yml scrapes every 5 s
SAMPLES = [("My parcel is three days late", "delivery,billing,praise"),
           ("I was charged twice for one order", "delivery,billing,praise,complaint"),
           ("Thanks, the support team was great", "praise,complaint")]
# a killed tritonserver must be answering again within this (measured: about 2 s on 2 cores)
RECOVERY_BOUND_S = 30.0
SCORE_TOLERANCE = 1e-5
LOCUST_S = 10
# kills the container's tritonserver (the image has no pkill)
KILL_TRITONSERVER = (
    "import os, signal\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        name = open(f'/proc/{pid}/comm').read().strip()\n"
    "    except OSError:\n"
    "        continue\n"
    "    if name == 'tritonserver':\n"
    "        os.kill(int(pid), signal.SIGKILL)\n"
    "        print(pid)\n"
)


@dataclass
class Step:
    name: str
    status: str  # ok, FAILED, skipped
    seconds: float
    detail: str = ""


class StepFailed(Exception):
    pass


def run_compose(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`docker compose` with every profile, in the checkout, with the offline build variables (and `env`)."""
    command = ["docker", "compose", *[arg for profile in PROFILES for arg in ("--profile", profile)], *args]
    return subprocess.run(command, cwd=ROOT, env=dict(os.environ, **images.build_env(), **(env or {})), text=True,
                          capture_output=True, timeout=timeout)


def compose(*args: str, check: bool = True, timeout: float = 900) -> str:
    """run_compose's output; with `check`, a failure raises StepFailed with its end."""
    done = run_compose(*args, timeout=timeout)
    if check and done.returncode != 0:
        output = (done.stdout or "") + (done.stderr or "")
        raise StepFailed(f"`docker compose {' '.join(args)}` exited {done.returncode}: {output.strip()[-600:]}")
    return (done.stdout or "") + (done.stderr or "")


def project_leftovers() -> dict[str, list[str]]:
    """Containers, networks and volumes that still carry the project's compose label."""
    label = f"label=com.docker.compose.project={PROJECT}"
    found = {}
    for kind, command in (("containers", ["ps", "-a"]), ("networks", ["network", "ls"]),
                          ("volumes", ["volume", "ls"])):
        out = subprocess.run(["docker", *command, "--filter", label, "--format", "{{.Names}}" if kind == "containers"
                              else "{{.Name}}"], capture_output=True, text=True, check=True).stdout.split()
        if out:
            found[kind] = out
    return found


def classify_all(url: str, protocol: str) -> list[tuple[list[str], list[float]]]:
    from zsc_client import ZeroShotClient

    client = ZeroShotClient(url, protocol=protocol, timeout_s=30)
    return [(result.labels, result.scores) for result in (client.classify(text, labels) for text, labels in SAMPLES)]


def same_answers(got, expected) -> str | None:
    """Why two lists of (labels, scores) differ beyond SCORE_TOLERANCE, or None."""
    for (labels, scores), (want_labels, want_scores), (text, _) in zip(got, expected, SAMPLES):
        if labels != want_labels or any(abs(a - b) > SCORE_TOLERANCE for a, b in zip(scores, want_scores)):
            return f"{text!r}: {list(zip(labels, scores))} != {list(zip(want_labels, want_scores))}"
    return None


def local_answers(repository: Path) -> list:
    """The same repository served by the launcher's TritonServer on this host (`make serve`)."""
    from zsc_server.triton_process import TritonServer, free_ports

    with TritonServer(repository, *free_ports(3)) as server:
        return classify_all(server.grpc_url, "grpc")


def wait_until_answering(deadline_s: float) -> float:
    started = time.monotonic()
    while True:
        try:
            classify_all(GRPC, "grpc")
            return time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 - any failure means not back yet
            if time.monotonic() - started > deadline_s:
                raise StepFailed(f"not answering {deadline_s:.0f} s after the kill: {exc}") from None
            time.sleep(0.2)


def http_json(url: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Smoke:
    def __init__(self, model: str, keep_going: bool = False):
        self.model, self.keep_going = model, keep_going
        self.steps: list[Step] = []
        self.expected: list = []

    def step(self, name: str, action: Callable[[], str | None]) -> bool:
        print(f"[compose-smoke] {name} ...", flush=True)
        started = time.monotonic()
        try:
            detail = action() or ""
            status = "ok"
        except (StepFailed, subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError, ValueError) as exc:
            detail, status = str(exc), "FAILED"
        self.steps.append(Step(name, status, time.monotonic() - started, detail))
        print(f"[compose-smoke] {name}: {status} {detail}".rstrip(), flush=True)
        return status == "ok"

    # ------------------------------------------------------------------ steps

    def build(self) -> str:
        compose("build")
        return "triton, export, client, prometheus images; no network inside the builds"

    def export(self) -> str:
        subprocess.run(["make", "export", f"MODEL={self.model}"], cwd=ROOT, check=True)
        env = (ROOT / ".env").read_text(encoding="utf-8")
        if "COMPOSE_FILE=docker-compose.yml\n" not in env:
            raise StepFailed(f"make export did not pick the CPU stack in .env:\n{env}")
        return f"{self.model}; .env: CPU stack"

    def refuses_without_export(self) -> str:
        with tempfile.TemporaryDirectory(prefix="zsc-empty-repository-") as empty:
            os.chmod(empty, 0o755)
            done = run_compose("up", "-d", "--wait", "triton", timeout=300, env={"ZSC_MODEL_REPOSITORY": empty})
            logs = compose("logs", "check-export")
            # created, never started: no restart loop on an empty repository
            triton_state = compose("ps", "-a", "--format", "{{.State}}", "triton").strip()
            compose("down", "-v")
        if done.returncode == 0:
            raise StepFailed("`docker compose up` on an empty repository succeeded")
        if triton_state not in ("created", ""):
            raise StepFailed(f"the triton container was started on an empty repository ({triton_state})")
        if "make export" not in logs:
            raise StepFailed(f"check-export's message does not name `make export`: {logs.strip()[-300:]}")
        return "up fails at once; check-export: " + logs.strip().splitlines()[-1].split("|", 1)[-1].strip()

    def up(self) -> str:
        compose("up", "-d", "--wait", "triton", "webui", "prometheus", timeout=600)
        return "triton healthy, webui and prometheus running"

    def answers_equal_make_serve(self) -> str:
        self.expected = local_answers(ROOT / "model_repository")
        for protocol, url in (("grpc", GRPC), ("http", HTTP)):
            problem = same_answers(classify_all(url, protocol), self.expected)
            if problem:
                raise StepFailed(f"{protocol}: {problem}")
        return f"{len(SAMPLES)} texts over gRPC and HTTP == make serve (scores within {SCORE_TOLERANCE})"

    def edge(self) -> str:
        """The triton image has haproxy, so the launcher's edge proxy took the public ports (the answers above
        came through it)."""
        line = next((line for line in compose("logs", "triton").splitlines() if "[serve] edge:" in line), "")
        if "haproxy on the public ports" not in line:
            raise StepFailed(f"the launcher did not start its edge proxy: {line.strip() or 'no [serve] edge line'}")
        return line.split("|", 1)[-1].strip()[:120]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=10) as response:
            text = response.read().decode()
        success = [line for line in text.splitlines()
                   if line.startswith('nv_inference_request_success{model="zero_shot"')]
        if not success or float(success[0].rsplit(" ", 1)[1]) < len(SAMPLES):
            raise StepFailed(f"no zero_shot successes counted on /metrics: {success}")
        return success[0]

    def prometheus(self) -> str:
        """Prometheus (the monitoring profile, Debian's package) has scraped the triton container."""
        started = time.monotonic()
        query = "http://" + PROMETHEUS + "/api/v1/query?query=nv_inference_request_success"
        while True:
            result = http_json(query)["data"]["result"]
            scraped = [series for series in result if series["metric"].get("model") == "zero_shot"]
            if scraped:
                return f"nv_inference_request_success of zero_shot scraped from {scraped[0]['metric']['instance']}"
            if time.monotonic() - started > SCRAPE_WAIT_S:
                raise StepFailed(f"Prometheus has no zero_shot series after {SCRAPE_WAIT_S:.0f} s: {result}")
            time.sleep(1)

    def health(self) -> str:
        container = compose("ps", "-q", "triton").strip()
        status = subprocess.run(["docker", "inspect", "--format", "{{.State.Health.Status}}", container],
                                capture_output=True, text=True, check=True).stdout.strip()
        if status != "healthy":
            raise StepFailed(f"healthcheck: {status}")
        return "healthcheck (a real classification): healthy"

    def webui(self) -> str:
        text, labels = SAMPLES[0]
        body = http_json(f"http://{WEBUI}/api/classify", {"text": text, "labels": labels})
        problem = same_answers([(body["labels"], body["scores"])], self.expected[:1])
        if problem:
            raise StepFailed(f"/api/classify: {problem}")
        return f"/api/classify: {body['labels'][0]} {body['scores'][0]:.4f}"

    def gpu_stack_config(self) -> str:
        """The GPU stack as Compose itself merges docker-compose.yml with deploy/compose.gpu.yml (only a GPU
        host runs it): the triton service's command and ports as the CPU stack's, a GPU reserved for it."""
        def triton(*files: str) -> dict:
            done = run_compose(*(arg for name in files for arg in ("-f", name)), "config", "--format", "json")
            if done.returncode != 0:
                raise StepFailed(f"docker compose config ({' + '.join(files)}): {done.stderr.strip()[-600:]}")
            return json.loads(done.stdout)["services"]["triton"]

        cpu, gpu = triton("docker-compose.yml"), triton("docker-compose.yml", "deploy/compose.gpu.yml")
        for key in ("command", "ports", "healthcheck", "environment"):
            if gpu.get(key) != cpu.get(key):
                raise StepFailed(f"the GPU stack's triton {key} differs from the CPU stack's: {gpu.get(key)}")
        devices = gpu.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if not any("gpu" in device.get("capabilities", []) for device in devices):
            raise StepFailed(f"no GPU reserved for the GPU stack's triton: {devices}")
        return f"GPU stack: triton as on the CPU stack, image {gpu['image']}, a GPU reserved"

    def locust(self) -> str:
        out = compose("run", "--rm", "--no-deps", "locust", "--headless", "-u", "4", "-r", "4", "-t", f"{LOCUST_S}s",
                      "--only-summary", "--host", "http://triton:8000", "--grpc-url", "triton:8001", "--distinct",
                      "TritonGrpcUser", "TritonHttpUser")  # the score kind as the served config says (auto)
        # locust exits non-zero on any failure (compose() raises then); the request count from its summary
        aggregated = next((line.split() for line in out.splitlines() if line.strip().startswith("Aggregated")), [])
        return f"{LOCUST_S} s headless, 0 failures in {' '.join(aggregated[1:2]) or '?'} requests"

    def export_container(self) -> str:
        target = ROOT / "exports" / "compose-smoke"
        try:
            compose("run", "--rm", "export", "--model", self.model, "--repository", str(target.relative_to(ROOT)))
            if not (target / "zero_shot" / "config.pbtxt").is_file():
                raise StepFailed(f"docker compose run export wrote no repository in {target}")
        finally:
            # the container writes as root: its files go with its own rm
            compose("run", "--rm", "--entrypoint", "rm", "export", "-rf", str(target.relative_to(ROOT)), check=False)
        return f"`docker compose run --rm export --model {self.model}` wrote a repository"

    def restart_after_kill(self) -> str:
        killed = compose("exec", "-T", "triton", "python3", "-c", KILL_TRITONSERVER).split()
        if not killed:
            raise StepFailed("no tritonserver process in the triton container")
        seconds = wait_until_answering(RECOVERY_BOUND_S)
        return f"tritonserver SIGKILLed: answering again after {seconds:.1f} s (bound {RECOVERY_BOUND_S:.0f} s)"

    def down(self) -> str:
        compose("down", "-v", "--remove-orphans")
        left = project_leftovers()
        if left:
            raise StepFailed(f"left behind: {left}")
        return "no container, network or volume of the project left"

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        started = time.monotonic()
        plan = [("base image", lambda: images.make_base_image(log=self.log)),
                ("wheelhouse", lambda: images.make_wheelhouse(log=self.log)),
                ("build images", self.build),
                ("make export", self.export),
                ("GPU stack config", self.gpu_stack_config),
                ("up without an export", self.refuses_without_export),
                ("up -d --wait", self.up),
                ("gRPC + HTTP answers", self.answers_equal_make_serve),
                ("edge proxy", self.edge),
                ("/metrics", self.metrics),
                ("Prometheus scrape", self.prometheus),
                ("healthcheck", self.health),
                ("WebUI /api/classify", self.webui),
                ("Locust", self.locust),
                ("export container", self.export_container),
                ("kill tritonserver", self.restart_after_kill)]
        try:
            for name, action in plan:
                if not self.step(name, action) and not self.keep_going:
                    break
        finally:
            self.step("down -v", self.down)
        for name, _ in plan:
            if name not in {step.name for step in self.steps}:
                self.steps.insert(-1, Step(name, "skipped", 0.0))
        print(table(self.steps, time.monotonic() - started), flush=True)
        return 0 if all(step.status == "ok" for step in self.steps) else 1

    @staticmethod
    def log(message: str) -> None:
        print(f"[compose-smoke]   {message}", flush=True)


def table(steps: list[Step], total_s: float) -> str:
    width = max(len(step.name) for step in steps)
    lines = [f"{'step':<{width}}  {'status':<7} {'seconds':>8}  detail", "-" * (width + 30)]
    for step in steps:
        detail = step.detail.splitlines()[0][:110] if step.detail else ""
        lines.append(f"{step.name:<{width}}  {step.status:<7} {step.seconds:8.1f}  {detail}")
    lines.append(f"{'total':<{width}}  {'':<7} {total_s:8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.smoke", description=__doc__.split("\n\n")[0],
        epilog="Needs Docker (a running engine), Compose v2 (`docker compose`) and debootstrap; "
               "python -m deploy.images --help prepares each part on its own.")
    parser.add_argument("--model", default="offline-minilm", help="what `make export` exports (default: the "
                        "offline MiniLM)")
    parser.add_argument("--keep-going", action="store_true", help="run every step even after one fails")
    args = parser.parse_args(argv)
    missing = images.missing_tools()
    if missing:
        print("[compose-smoke] missing here:", file=sys.stderr)
        for item in missing:
            print(f"  - {item.what}: {item.how}", file=sys.stderr)
        return 2
    return Smoke(args.model, args.keep_going).run()


if __name__ == "__main__":
    raise SystemExit(main())
