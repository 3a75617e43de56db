"""Locust scenario for the zero-shot ensemble on Triton, and for the reference deployment as a baseline.

User classes (pick one or more on the command line; `python -m loadtest.run` does):
  TritonHttpUser   KServe v2 JSON: POST /v2/models/zero_shot/infer
  TritonGrpcUser   tritonclient gRPC through zsc_client (gevent-compatible), reported to Locust
  ReferenceFlaskUser    POST /classify on the baseline Flask apps (loadtest/baselines/flask_app.py)

Every answer is checked against the request it answers (loadtest.workload.answer_problem); a wrong
answer counts as a failure, not only an error status.

  locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 TritonHttpUser
  locust -f loadtest/locustfile.py --headless -u 10 -r 10 -t 60s --host http://127.0.0.1:8000 \
         --label-mode fresh --label-mix 3:2,10:1 TritonGrpcUser
"""

from __future__ import annotations

# gRPC under gevent: grpcio must hand its completion queue to gevent before any channel exists,
# or each call blocks every Locust user in this process.
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import functools  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from locust import FastHttpUser, User, events, task  # noqa: E402

from loadtest.workload import (  # noqa: E402
    DEFAULT_WORKLOAD,
    LABEL_MODES,
    SCORE_KINDS,
    TRITON_INFER,
    Workload,
    answer_problem,
    export_facts,
    flask_body,
    kserve_body,
    score_kind_of,
)
from zsc_client import ZeroShotClient, ZeroShotClientError  # noqa: E402
from zsc_client.request import LABELS, SCORES  # noqa: E402

MODEL = "zero_shot"
_user_numbers = itertools.count()
# every user of this process samples from one parsed copy of the workload file
_load_workload = functools.cache(Workload.load)


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    group = parser.add_argument_group("zero-shot workload")
    group.add_argument("--workload", default=str(DEFAULT_WORKLOAD), help="workload JSON (texts, label sets)")
    group.add_argument("--label-mode", choices=LABEL_MODES, default="sets",
                       help="fixed: one label set (cache-friendly); sets: the workload's sets; fresh: random labels")
    group.add_argument("--label-mix", default="", help="label-count weights, e.g. 3:4,5:2,10:1")
    group.add_argument("--text-mix", default="", help="text-length weights, e.g. short:1,medium:2,long:1")
    group.add_argument("--multi-label-share", type=float, default=0.0, help="share of multi-label requests")
    group.add_argument("--wait-s", type=float, default=0.0, help="think time between a user's requests")
    group.add_argument("--request-timeout-s", type=float, default=30.0, help="a slower answer is a failure")
    group.add_argument("--grpc-url", default="", help="Triton gRPC host:port (default: --host's host, port 8001)")
    group.add_argument("--score-kind", choices=("auto", *SCORE_KINDS), default="auto",
                       help="what a valid answer's scores are: NLI probabilities or embedding cosines (default "
                            "auto: the served ensemble's config says, read from --host; probabilities for the "
                            "Flask baselines)")
    group.add_argument("--seed", type=int, default=0, help="workload sampling seed (per user: seed + user number)")
    group.add_argument("--distinct", action="store_true",
                       help="end every text in a unique whitespace tag (dropped by the tokenizers): no two requests "
                            "alike, so the response cache answers none and every server does the workload's work")


@functools.cache
def _served_score_kind(host: str) -> str:
    """The score kind of the ensemble that the Triton at `host` (HTTP) serves, from its config's export facts
    (read here, not through loadtest.server.Target: that imports zsc_server, which the client image lacks)."""
    url = f"{host.rstrip('/')}/v2/models/{MODEL}/config"
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return score_kind_of(export_facts(json.load(reply)))
    except (OSError, ValueError, KeyError) as exc:
        raise RuntimeError(f"--score-kind auto: cannot read {url} ({exc!r}); give --score-kind "
                           f"{' or '.join(SCORE_KINDS)}") from None


class WorkloadUser(User):
    abstract = True
    serves_zero_shot = True  # a Triton whose config says what its scores are; the Flask baselines: NLI

    def wait_time(self) -> float:
        return self.environment.parsed_options.wait_s

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.sampler = _load_workload(options.workload).sampler(
            options.label_mode, options.label_mix, options.text_mix, options.multi_label_share,
            seed=options.seed + next(_user_numbers), distinct=options.distinct)
        self.score_kind = options.score_kind
        if self.score_kind == "auto":
            self.score_kind = _served_score_kind(self.host) if self.serves_zero_shot else "probabilities"


class JsonEndpointUser(WorkloadUser, FastHttpUser):
    """POSTs each request as JSON and checks the answer; subclasses say where (path), in which format (body)
    and where the labels and scores are in the reply (labels_and_scores)."""

    abstract = True

    def __init__(self, environment) -> None:
        # FastHttpSession ignores a per-request timeout on a JSON POST: the session's own are the ones in force
        if environment.parsed_options:
            self.network_timeout = self.connection_timeout = environment.parsed_options.request_timeout_s
        super().__init__(environment)

    @task
    def classify(self) -> None:
        request = self.sampler.next()
        with self.client.post(self.path, json=self.body(request), name=self.name, catch_response=True) as response:
            if response.status_code != 200:  # 0: no answer at all (response.error says why, e.g. a timeout)
                response.failure(f"HTTP {response.status_code}: {(response.text or repr(response.error))[:200]}")
                return
            try:
                problem = answer_problem(request, *self.labels_and_scores(response.json()), self.score_kind)
            except (ValueError, KeyError, TypeError) as exc:
                problem = f"unreadable answer ({type(exc).__name__}: {exc}): {(response.text or '')[:200]}"
            if problem:
                response.failure(problem)


class TritonHttpUser(JsonEndpointUser):
    path, name, body = TRITON_INFER, f"{MODEL} [http]", staticmethod(kserve_body)

    @staticmethod
    def labels_and_scores(answer: dict) -> tuple[list, list]:
        outputs = {output["name"]: output["data"] for output in answer["outputs"]}
        return outputs[LABELS], outputs[SCORES]


class AnswerMismatch(Exception):
    pass


@functools.cache
def _grpc_client(url: str, timeout_s: float) -> ZeroShotClient:
    """One gRPC channel per Locust process, shared by all its users: HTTP/2 multiplexes their calls,
    as it would for a real client service. It is never closed: under gevent, closing grpcio channels
    can deadlock in grpcio's gevent channel bookkeeping (seen here: Locust hanging at exit in
    tritonclient's `__del__` -> `Channel.close`, and a CI run hung there), so the process exit frees it."""
    return ZeroShotClient(url, "grpc", timeout_s=timeout_s)


class TritonGrpcUser(WorkloadUser):
    def on_start(self) -> None:
        super().on_start()
        options = self.environment.parsed_options
        url = options.grpc_url or f"{urlsplit(self.host).hostname}:8001"
        self.triton = _grpc_client(url, options.request_timeout_s)

    @task
    def classify(self) -> None:
        request = self.sampler.next()
        started = time.perf_counter()
        error: Exception | None = None
        length = 0
        try:
            result = self.triton.classify(request.text, list(request.labels), multi_label=request.multi_label)
            length = len(result.labels)
            problem = answer_problem(request, result.labels, result.scores, self.score_kind)
            error = AnswerMismatch(problem) if problem else None
        except ZeroShotClientError as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="grpc", name=f"{MODEL} [grpc]", response_time=(time.perf_counter() - started) * 1e3,
            response_length=length, exception=error, context={},
        )


class ReferenceFlaskUser(JsonEndpointUser):
    """The reference deployment's stack: one pipeline behind Flask, `POST /classify` with JSON."""

    path, name, body = "/classify", "classify [flask]", staticmethod(flask_body)
    serves_zero_shot = False

    @staticmethod
    def labels_and_scores(answer: dict) -> tuple[list, list]:
        return answer["labels"], answer["scores"]
