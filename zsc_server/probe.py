"""`python -m zsc_server.probe`: a health check that runs a real classification through the ensemble.

Triton's own /v2/health/ready stays "ready" when a Python-backend stub has died (Triton 2.51 neither
restarts it nor reports it: every request then fails with "Stub process ... is not healthy", see
tests/integration/test_faults.py). This probe sends one small request with a text never sent before
(so the response cache cannot answer it) and checks the answer, so a liveness probe built on it
restarts such a server. A server that refuses the probe because its queue is full or slow (HTTP 503,
"exceeds maximum queue size" / "Request timeout expired") passes: it is alive and answering, and
restarting it would drop every request it holds. Standard library only: it runs inside the Triton image.
Exit status 0: answered correctly, or busy; 1: anything else, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

from zsc_server import tensor_names as names
from zsc_server.triton_errors import dead_stub_instances, refusal_kind

LABELS = ["咨询", "投诉"]


@dataclasses.dataclass(frozen=True)
class Health:
    """What a probe found: ok (answered correctly, or busy), or the problem; with the instances whose stub
    Triton says died, when it named any (zsc_server.revive reloads their models)."""

    problem: str | None = None
    dead_stubs: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        return self.problem is None

    @classmethod
    def failed(cls, problem: str) -> Health:
        return cls(problem, frozenset(dead_stub_instances(problem)))


def check_health(url: str, model: str, timeout_s: float) -> Health:
    """Send `model` a fresh request and judge the answer (module docstring)."""
    problem = _problem(url, model, timeout_s)
    return Health() if problem is None else Health.failed(problem)


def _problem(url: str, model: str, timeout_s: float) -> str | None:
    body = {"inputs": [
        {"name": names.TEXT, "datatype": "BYTES", "shape": [1], "data": [f"health probe {uuid.uuid4().hex}"]},
        {"name": names.CANDIDATE_LABELS, "datatype": "BYTES", "shape": [len(LABELS)], "data": LABELS},
    ]}
    request = urllib.request.Request(f"{url.rstrip('/')}/v2/models/{model}/infer", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            outputs = {output["name"]: output["data"] for output in json.load(response)["outputs"]}
    except urllib.error.HTTPError as exc:
        message = exc.read().decode(errors="replace")[:300]
        return None if is_busy(exc.code, message) else f"HTTP {exc.code}: {message}"
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        return f"no answer: {exc}"
    if sorted(outputs.get(names.LABELS, [])) != sorted(LABELS) or len(outputs.get(names.SCORES, [])) != len(LABELS):
        return f"wrong answer: {outputs}"
    return None


def is_busy(status: int, message: str) -> bool:
    """The server refusing a request for load: admission control ("busy: requests would wait ..."), or
    Triton's bounded queue, full ("exceeds maximum queue size") or waited past its timeout ("Request
    timeout expired"); all HTTP 503 (gRPC UNAVAILABLE)."""
    return status == 503 and refusal_kind(message) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zsc_server.probe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://localhost:8000", help="Triton's HTTP endpoint")
    parser.add_argument("--model", default="zero_shot")
    parser.add_argument("--timeout-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    health = check_health(args.url, args.model, args.timeout_s)
    if not health.ok:
        print(f"probe failed: {health.problem}", file=sys.stderr)
        return 1
    print(f"probe ok: {args.model} answered (or said busy) in {(time.perf_counter() - started) * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
