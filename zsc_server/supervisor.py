"""Keep one tritonserver serving: watch it, reload a model whose stub died, restart it when it dies.

What can end a tritonserver that was serving: a request that crashes it (Triton 2.51 segfaults on some
HTTP bodies the HTTP front does not reach, e.g. over gRPC), the kernel's OOM killer, an operator's kill,
or three failed probes in a row (a model that no longer answers). Each time the supervisor logs why,
clears what it left (zsc_server.reaper), and starts a fresh one on the same ports: a request must not take
the service down for good. A server that never becomes ready is another matter (a broken repository, a
port taken): those starts are retried with a growing delay, and after RestartPolicy.max_failed_starts in a
row the launcher gives up and exits, for whatever runs it (compose, Kubernetes, systemd) to decide.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

from zsc_server.probe import Health, check_health
from zsc_server.reaper import restrict_regions
from zsc_server.revive import ReviveError, Reviver, stub_models
from zsc_server.triton_process import ServerError, TritonServer
from zsc_server.warm_up import WarmUpError, warm_label_cache

PROBE_FAILURES = 3
# Longer than the encoder's queue timeout (10 s unless exported otherwise): a busy server refuses the probe
# (it passes, see zsc_server.probe) before the probe gives up (it fails). The compose and Kubernetes
# probes use the same (tests/unit/test_deploy.py).
PROBE_TIMEOUT_S = 15.0
STUB_CHECK_S = 1.0  # how often the launcher looks for dead stubs (in /proc), between probes
UNHEALTHY = "unhealthy"  # watch()'s outcome when the probes failed


@dataclasses.dataclass(frozen=True)
class RestartPolicy:
    """restart_delay_s: after a server that had been serving died (short: every second counts, and what
    killed it was one event). Starts that never reach readiness wait failed_start_delay_s, doubled after
    each, up to max_delay_s; max_failed_starts of them in a row end the launcher."""

    restart_delay_s: float = 0.5
    failed_start_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_failed_starts: int = 5

    def delay_s(self, failed_starts: int) -> float:
        if failed_starts == 0:
            return self.restart_delay_s
        return min(self.max_delay_s, self.failed_start_delay_s * 2 ** (failed_starts - 1))


def exit_reason(code: int | None) -> str:
    if code is None:
        return "tritonserver stopped answering"
    if code < 0:
        return f"tritonserver was killed by {signal.Signals(-code).name}"
    return f"tritonserver exited with code {code}"


class Supervisor:
    """Runs `make_server()` servers one after another until `stopping()`; `on_ready(server, first)` after
    each becomes ready (the HTTP front's upstream, the ready line); `before_stop()` once stopping, before
    the server is stopped (the HTTP front finishes what is in flight)."""

    def __init__(self, make_server: Callable[[], TritonServer], stopping: Callable[[], bool],
                 on_ready: Callable[[TritonServer, bool], None], warm_labels: str | None = None,
                 probe_interval_s: float = 15.0, ready_timeout_s: float = 300.0,
                 policy: RestartPolicy = RestartPolicy(), before_stop: Callable[[], None] = lambda: None) -> None:
        self.make_server, self.stopping, self.on_ready, self.before_stop = make_server, stopping, on_ready, before_stop
        self.warm_labels, self.probe_interval_s, self.ready_timeout_s = warm_labels, probe_interval_s, ready_timeout_s
        self.policy = policy
        self.server: TritonServer | None = None
        self.restarts = 0

    def run(self) -> int:
        """0 once stopping; 1 when the first server, or max_failed_starts restarts in a row, failed to start."""
        failed_starts, served = 0, False
        while not self.stopping():
            self.server = self.make_server()
            died_at = None
            try:
                self.server.start()
                print(f"[serve] starting tritonserver on {self.server.repository} ...", flush=True)
                self.server.wait_until_ready(self.ready_timeout_s, cancelled=self.stopping)
            except ServerError as exc:
                stop(self.server)
                if self.stopping():
                    return 0
                failed_starts += 1
                print(f"[serve] {exc}", file=sys.stderr, flush=True)
                if not served:  # nothing was serving: what failed needs a person (a repository, a port)
                    return 1
                if failed_starts >= self.policy.max_failed_starts:
                    print(f"[serve] tritonserver failed to start {failed_starts} times in a row: giving up",
                          file=sys.stderr, flush=True)
                    return 1
            else:
                failed_starts = 0
                self._warm_up()
                self.on_ready(self.server, not served)
                served = True
                outcome = watch(self.server, self.probe_interval_s, self.stopping, self._warm_up)
                died_at = time.monotonic()
                if self.stopping():
                    self.before_stop()
                    print(f"[serve] tritonserver exited with code {stop(self.server)}", flush=True)
                    return 0
                self.restarts += 1
                print(f"[serve] {exit_reason(None if outcome == UNHEALTHY else outcome)}: restarting it "
                      f"(restart {self.restarts})", file=sys.stderr, flush=True)
                stop(self.server)
            self._sleep(self.policy.delay_s(failed_starts) - (time.monotonic() - died_at if died_at else 0))
        return 0

    def _warm_up(self, models: list[str] | None = None) -> None:
        if self.warm_labels and (models is None or "preprocess" in models):
            warm(self.server.http_url, self.warm_labels, self.server.admin_secret)

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping() and time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def stop(server: TritonServer) -> int | None:
    """server.stop(), printing what it had to do beyond a SIGTERM."""
    code = server.stop()
    for note in server.shutdown_notes:
        print(f"[serve] {note}", flush=True)
    return code


def warm(http_url: str, warm_labels: str, admin_secret: str) -> None:
    """Warm every preprocess instance's label cache (zsc_server.warm_up), saying what was done; a failure
    is reported and the server goes on (a cold cache is slower, not wrong)."""
    try:
        result = warm_label_cache(http_url, warm_labels, admin_secret)
    except WarmUpError as exc:
        print(f"[serve] label cache warm-up failed, the cache starts cold: {exc}", file=sys.stderr, flush=True)
        return
    if result is None:
        print("[serve] --warm-labels ignored: this export has no label cache (NLI mode, or --label-cache-mb 0)",
              file=sys.stderr, flush=True)
        return
    for error in result.errors:
        print(f"[serve] not warmed: {error}", file=sys.stderr, flush=True)
    print(f"[serve] {result.summary()}", flush=True)


def watch(server: TritonServer, interval_s: float, stopping, on_reload=None) -> int | str | None:
    """Wait for tritonserver to exit (returns its exit code), for `stopping()` (returns None), or for
    PROBE_FAILURES failed probes in a row (returns UNHEALTHY), running the inference probe every
    `interval_s` meanwhile. Triton 2.51 keeps a model "ready" after its Python-backend stub died and fails
    every request that reaches it, so the launcher also looks at the stubs every STUB_CHECK_S: when one has
    died it reloads that model at once (zsc_server.revive), and when a probe fails naming a dead stub,
    that one. `on_reload` gets the models reloaded (the label cache's warm-up: a reloaded preprocess
    starts with empty caches)."""
    url, pid = f"http://{server.http_url}", server.process.pid
    reviver = Reviver(server.http_url, server.admin_secret, pid) if server.revivable else None
    # stubs per model once ready: fewer alive later means some died, also one that died during a reload
    expected, failures, next_probe = Counter(stub_models(pid).values()), 0, time.monotonic() + interval_s
    while not stopping():
        try:
            return server.process.wait(timeout=min(interval_s, STUB_CHECK_S) if interval_s > 0 else STUB_CHECK_S)
        except subprocess.TimeoutExpired:
            pass
        restrict_regions(server.shm_prefix)  # a reload or a restarted stub makes new ones
        if stopping() or interval_s <= 0:
            continue
        alive = Counter(stub_models(pid).values())
        died = sorted(model for model, count in expected.items() if alive[model] < count)
        if not died and time.monotonic() < next_probe:
            continue
        problem = None
        if died and reviver is not None:
            problem = reload(reviver.replace, died, f"a stub of {', '.join(died)} died", on_reload)
        health = Health.failed(problem) if problem else check_health(url, "zero_shot", PROBE_TIMEOUT_S)
        if health.dead_stubs and reviver is not None:
            problem = reload(reviver.revive, health.dead_stubs, health.problem, on_reload)
            health = Health.failed(problem) if problem else check_health(url, "zero_shot", PROBE_TIMEOUT_S)
        next_probe = time.monotonic() + interval_s
        failures = 0 if health.ok else failures + 1
        if not health.ok:
            print(f"[serve] health probe failed ({failures}/{PROBE_FAILURES}): {health.problem}", flush=True)
        if failures >= PROBE_FAILURES:
            return UNHEALTHY
    return None


def reload(how, what, why: str, on_reload=None) -> str | None:
    """Reload models with `how(what)` (Reviver.replace or Reviver.revive), then `on_reload(models)`: None once
    reloaded, else the problem, with what failed."""
    started = time.monotonic()
    try:
        models = how(what)
    except ReviveError as exc:
        return f"{why}; reloading failed: {exc}"
    if not models:
        return why
    print(f"[serve] {why}: reloaded {', '.join(models)} in {time.monotonic() - started:.1f} s", flush=True)
    if on_reload is not None:
        on_reload(models)
    return None
