"""Synchronous client over tritonclient gRPC or HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from zsc_client.errors import ServerUnavailableError, ZeroShotClientError, translate
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


class ZeroShotClient:
    """Classify texts against candidate labels chosen at request time.

    ``url`` is 'host:port' (gRPC default port 8001, HTTP 8000). Every method raises
    ``ZeroShotClientError`` (``InvalidInputError`` for refused input,
    ``ServerUnavailableError`` when the server cannot be reached).
    """

    def __init__(
        self, url: str = "localhost:8001", protocol: str = "grpc", model_name: str = DEFAULT_MODEL,
        timeout_s: float = 60.0, concurrency: int = 8,
    ) -> None:
        self.url, ssl = split_url(url, protocol)
        self.protocol = protocol
        self.model_name = model_name
        self.timeout_s = timeout_s
        if protocol == "grpc":
            self._module = grpcclient
            self._client = grpcclient.InferenceServerClient(self.url, ssl=ssl)
        else:
            self._module = httpclient
            self._client = httpclient.InferenceServerClient(
                self.url, ssl=ssl, concurrency=concurrency,
                connection_timeout=timeout_s, network_timeout=timeout_s,
            )

    def classify(
        self, text: str, candidate_labels: Labels, hypothesis_template: str | None = None,
        multi_label: bool = False,
    ) -> ClassificationResult:
        """Labels of ``candidate_labels`` (a list, or one string split on ',' / '，') ranked for ``text``."""
        inputs = build_inputs(self._module, text, candidate_labels, hypothesis_template, multi_label)
        started = time.perf_counter()
        try:
            response = self._client.infer(
                self.model_name, inputs, outputs=requested_outputs(self._module),
                **call_deadline(self.protocol, self.timeout_s),
            )
        except Exception as exc:  # noqa: BLE001 - translated to this package's error types
            raise translate(exc, self.url, self.protocol) from exc
        return parse_result(response, text, (time.perf_counter() - started) * 1e3)

    def classify_batch(
        self, texts: Sequence[str], candidate_labels: Labels, hypothesis_template: str | None = None,
        multi_label: bool = False,
    ) -> list[ClassificationResult]:
        """Classify many texts with the same labels; requests are in flight together so the
        server's dynamic batcher can merge them. Results are in the order of ``texts``."""
        if self.protocol == "http":
            return self._batch_http(texts, candidate_labels, hypothesis_template, multi_label)
        return self._batch_grpc(texts, candidate_labels, hypothesis_template, multi_label)

    def _batch_http(self, texts, candidate_labels, hypothesis_template, multi_label):
        pending = []
        for text in texts:
            inputs = build_inputs(self._module, text, candidate_labels, hypothesis_template, multi_label)
            pending.append((text, time.perf_counter(), self._client.async_infer(
                self.model_name, inputs, outputs=requested_outputs(self._module))))
        results = []
        for text, started, request in pending:
            try:
                response = request.get_result()
            except Exception as exc:  # noqa: BLE001
                raise translate(exc, self.url, self.protocol) from exc
            results.append(parse_result(response, text, (time.perf_counter() - started) * 1e3))
        return results

    def _batch_grpc(self, texts, candidate_labels, hypothesis_template, multi_label):
        if not texts:
            return []
        outcomes: list = [None] * len(texts)
        remaining = len(texts)
        lock = threading.Lock()
        done = threading.Event()

        def on_complete(index, started, result, error):  # runs on a gRPC thread
            nonlocal remaining
            elapsed_ms = (time.perf_counter() - started) * 1e3
            try:
                if error is not None:
                    raise error
                outcomes[index] = parse_result(result, texts[index], elapsed_ms)
            except Exception as exc:  # noqa: BLE001 - raised to the caller below, translated
                outcomes[index] = translate(exc, self.url, self.protocol)
            with lock:
                remaining -= 1
                if remaining == 0:
                    done.set()

        for index, text in enumerate(texts):
            inputs = build_inputs(self._module, text, candidate_labels, hypothesis_template, multi_label)
            started = time.perf_counter()
            self._client.async_infer(
                self.model_name, inputs,
                callback=lambda result, error, i=index, t=started: on_complete(i, t, result, error),
                outputs=requested_outputs(self._module), client_timeout=self.timeout_s,
            )
        # Each request has its own client_timeout; this bound only guards against a lost callback.
        if not done.wait(self.timeout_s + 10):
            raise ServerUnavailableError(f"batch of {len(texts)} requests did not finish in time")
        for outcome in outcomes:
            if isinstance(outcome, ZeroShotClientError):
                raise outcome
        return outcomes

    def is_ready(self, timeout_s: float | None = None) -> bool:
        """Server ready and the ensemble loaded; over gRPC each check waits at most ``timeout_s`` (default: the
        client's timeout)."""
        wait = call_deadline(self.protocol, timeout_s or self.timeout_s)
        try:
            return bool(self._client.is_server_ready(**wait) and self._client.is_model_ready(self.model_name, **wait))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    def wait_until_ready(self, timeout_s: float = 60.0, poll_s: float = 0.5) -> None:
        """Block until ``is_ready()``; raises ServerUnavailableError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.is_ready(max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise ServerUnavailableError(
                    f"{self.model_name} at {self.url} ({self.protocol}) not ready after {timeout_s:.0f}s")
            time.sleep(poll_s)

    def health(self) -> dict:
        """Liveness, readiness and the ensemble's readiness, as a dict; never raises."""
        report = {"url": self.url, "protocol": self.protocol, "model": self.model_name}
        wait = call_deadline(self.protocol, self.timeout_s)
        for key, probe in (("live", self._client.is_server_live), ("ready", self._client.is_server_ready),
                           ("model_ready", lambda **kw: self._client.is_model_ready(self.model_name, **kw))):
            try:
                report[key] = bool(probe(**wait))
            except Exception as exc:  # noqa: BLE001
                report[key] = False
                report.setdefault("error", str(translate(exc, self.url, self.protocol)))
        return report

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ZeroShotClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
