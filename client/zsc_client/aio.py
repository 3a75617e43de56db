"""asyncio client over tritonclient's grpc.aio / http.aio."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from zsc_client.errors import ServerUnavailableError, translate
from zsc_client.request import (
    DEFAULT_MODEL,
    ClassificationResult,
    Labels,
    build_inputs,
    call_deadline,
    parse_result,
    requested_outputs,
    split_url,
)


class AsyncZeroShotClient:
    """The asyncio twin of ``ZeroShotClient``; use ``async with`` or ``await close()``.

    ``timeout_s`` bounds each request from the call to its answer. Over HTTP at most ``max_connections``
    requests are on the wire at once (one connection each); the others wait for a free connection inside
    that same timeout. gRPC multiplexes every request over one channel and ignores ``max_connections``.
    """

    def __init__(
        self, url: str = "localhost:8001", protocol: str = "grpc", model_name: str = DEFAULT_MODEL,
        timeout_s: float = 60.0, max_connections: int = 100,
    ) -> None:
        self.url, ssl = split_url(url, protocol)
        self.protocol = protocol
        self.model_name = model_name
        self.timeout_s = timeout_s
        if protocol == "grpc":
            import tritonclient.grpc as module
            import tritonclient.grpc.aio as aio
        else:
            import tritonclient.http as module
            import tritonclient.http.aio as aio
        self._module = module
        if protocol == "grpc":
            self._client = aio.InferenceServerClient(self.url, ssl=ssl)
        else:
            # the session's total timeout is the per-request wall clock; http.aio's own `timeout` argument is
            # something else (a server-side queue timeout in microseconds)
            self._client = aio.InferenceServerClient(
                self.url, ssl=ssl, conn_limit=max_connections, conn_timeout=timeout_s)

    async def classify(
        self, text: str, candidate_labels: Labels, hypothesis_template: str | None = None,
        multi_label: bool = False,
    ) -> ClassificationResult:
        inputs = build_inputs(self._module, text, candidate_labels, hypothesis_template, multi_label)
        started = time.perf_counter()
        try:
            response = await self._client.infer(
                self.model_name, inputs, outputs=requested_outputs(self._module),
                **call_deadline(self.protocol, self.timeout_s))
        except Exception as exc:  # noqa: BLE001 - translated to this package's error types
            raise translate(exc, self.url, self.protocol) from exc
        return parse_result(response, text, (time.perf_counter() - started) * 1e3)

    async def classify_batch(
        self, texts: Sequence[str], candidate_labels: Labels, hypothesis_template: str | None = None,
        multi_label: bool = False, max_concurrency: int = 32,
    ) -> list[ClassificationResult]:
        """Classify many texts concurrently (at most ``max_concurrency`` in flight), in order. The first error
        is raised, and the requests not yet answered are cancelled."""
        gate = asyncio.Semaphore(max_concurrency)

        async def one(text: str) -> ClassificationResult:
            async with gate:
                return await self.classify(text, candidate_labels, hypothesis_template, multi_label)

        tasks = [asyncio.ensure_future(one(text)) for text in texts]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def is_ready(self, timeout_s: float | None = None) -> bool:
        """Server ready and the ensemble loaded; over gRPC each check waits at most ``timeout_s`` (default: the
        client's timeout)."""
        wait = call_deadline(self.protocol, timeout_s or self.timeout_s)
        try:
            return bool(await self._client.is_server_ready(**wait)
                        and await self._client.is_model_ready(self.model_name, **wait))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    async def wait_until_ready(self, timeout_s: float = 60.0, poll_s: float = 0.5) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.is_ready(max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise ServerUnavailableError(
                    f"{self.model_name} at {self.url} ({self.protocol}) not ready after {timeout_s:.0f}s")
            await asyncio.sleep(poll_s)

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncZeroShotClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()
