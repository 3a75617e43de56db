"""Load under faults, for the tests that break servers (test_faults, test_orphans, test_label_cache): worker
threads that send distinct requests back to back and check every answer, and the stub processes to kill."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
import time

import psutil

from loadtest.workload import ClassifyRequest, answer_problem
from zsc_client import ZeroShotClient, ZeroShotClientError

TIMEOUT_S = 20.0
LABEL_SETS = (("咨询", "投诉", "建议"), ("物流", "退款", "表扬", "维修"), ("bug report", "praise"))


@dataclasses.dataclass
class Outcome:
    request: ClassifyRequest
    client: int  # which of the Load's clients sent it
    started: float
    ended: float
    problem: str | None = None  # the answer does not fit the request
    error: ZeroShotClientError | None = None


class Load:
    """Worker threads, each with its own client made before any fault, sending requests back to back.
    Texts are numbered so that no two requests are alike and the response cache never answers.
    (An HTTP client stays on the thread that first used it: tritonclient.http's gevent hub is per thread.)"""

    def __init__(self, clients: list[ZeroShotClient], pause_after_error_s: float = 0.05) -> None:
        self.clients, self.pause_after_error_s = clients, pause_after_error_s
        self.outcomes: list[Outcome] = []
        self._numbers = itertools.count()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(len(clients))]

    def _work(self, index: int) -> None:
        client = self.clients[index]
        while not self._stop.is_set():
            n = next(self._numbers)
            request = ClassifyRequest(f"第{n}单：我的快递三天了还没到，请帮我查一下", LABEL_SETS[n % 3], n % 4 == 0)
            started = time.monotonic()
            outcome = Outcome(request, index, started, started)
            try:
                result = client.classify(request.text, list(request.labels), multi_label=request.multi_label)
                outcome.problem = answer_problem(request, result.labels, result.scores) or (
                    None if result.text == request.text else f"text {result.text!r}")
            except ZeroShotClientError as exc:
                outcome.error = exc
            outcome.ended = time.monotonic()
            with self._lock:
                self.outcomes.append(outcome)
            if outcome.error is not None:
                time.sleep(self.pause_after_error_s)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(TIMEOUT_S + 10)
        assert not any(thread.is_alive() for thread in self._threads), "a request never ended"

    def answered_after(self, moment: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.error is None and o.started > moment]

    def wait_for_every_client(self, after: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len({o.client for o in self.answered_after(after)}) < len(self.clients) and time.monotonic() < deadline:
            time.sleep(0.1)

    def wait_for_answers(self, count: int, after: float, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.answered_after(after)) < count and time.monotonic() < deadline:
            time.sleep(0.1)


def stub(root_pid: int, instance: str, wait_s: float = 0.0) -> psutil.Process:
    """The live triton_python_backend_stub of `instance` (e.g. encoder_0_0) under process `root_pid`
    (tritonserver, or `make serve`'s launcher); zombies of stubs killed earlier are skipped. `wait_s`: how long
    to wait for the one a reload is starting."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for child in psutil.Process(root_pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE and instance in child.cmdline():
                    found.append(child)
        if len(found) == 1 or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert len(found) == 1, f"{len(found)} live stubs of {instance} under {root_pid}"
    return found[0]


def assert_every_answer_fits(outcomes: list[Outcome]) -> None:
    wrong = [(o.request, o.problem) for o in outcomes if o.problem]
    assert not wrong, f"{len(wrong)} answers do not fit their requests: {wrong[:3]}"
    slow = [o for o in outcomes if o.ended - o.started > TIMEOUT_S - 5]
    assert not slow, f"{len(slow)} requests took nearly the client timeout: {slow[0]}"
