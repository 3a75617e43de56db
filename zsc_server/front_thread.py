"""What the HTTP and gRPC fronts share: an asyncio event loop of their own in a daemon thread (the launcher
stays synchronous), start that raises a failure to listen in the caller's thread, a bounded stop, and
counters readable from any thread."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Iterator

RESTARTING = "the inference server is restarting: try again"


@dataclasses.dataclass(frozen=True)
class StopReport:
    in_flight: int  # requests being read, forwarded or answered when stop() began
    cut: int  # those of them still unfinished at the drain bound, closed unanswered


class Admission:
    """What a front asks before it forwards an inference request to tritonserver: this one forwards everything
    (admission control off); zsc_server.admission.FrontGate refuses while the server is over its latency budget."""

    @contextlib.contextmanager
    def forwarding(self) -> Iterator[str | None]:
        """Yields None to forward the request, which counts as in flight until the block ends; else the reason
        to refuse it as busy."""
        yield None

    def answered(self) -> None:
        """A forwarded inference request was answered correctly (called inside its forwarding block)."""


class FrontThread:
    """Subclasses open their server in `open_server()` (run in the loop) and drain it in `_shutdown()`."""

    thread_name = "front"

    def __init__(self) -> None:
        self.admission = Admission()  # asked before an inference request goes on to tritonserver
        self.stop_report: StopReport | None = None
        self._counts: collections.Counter[str] = collections.Counter()
        self._counts_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _count(self, reason: str) -> None:
        with self._counts_lock:
            self._counts[reason] += 1

    def _counts_now(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts)

    def _serve_in_thread(self, open_server: Callable[[], Awaitable]) -> None:
        """Runs `open_server()` in a new loop in a daemon thread, then the loop until stop(); raises here
        whatever `open_server()` raised."""
        self._loop = asyncio.new_event_loop()
        started: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(open_server, started), name=self.thread_name,
                                        daemon=True)
        self._thread.start()
        try:
            started.result()
        except BaseException:
            self._thread.join()
            self._loop = self._thread = None
            raise

    def _run(self, open_server: Callable[[], Awaitable], started: concurrent.futures.Future) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(open_server())
        except BaseException as error:  # noqa: BLE001 (handed to _serve_in_thread, which raises it)
            started.set_exception(error)
        else:
            started.set_result(None)
            loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def stop(self, drain_timeout_s: float = 10.0) -> StopReport:
        """Stops taking requests at once and lets those in flight finish for up to drain_timeout_s (see the
        subclass's _shutdown), then ends the loop; a second call, or one before start(), does nothing."""
        if self._loop is None or self._thread is None:
            return StopReport(0, 0)
        report = asyncio.run_coroutine_threadsafe(self._shutdown(drain_timeout_s), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop = self._thread = None
        self.stop_report = report
        return report

    async def _shutdown(self, drain_timeout_s: float) -> StopReport:
        raise NotImplementedError
