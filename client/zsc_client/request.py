"""Request building and response parsing shared by the sync and async clients (gRPC and HTTP)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from zsc_client.errors import InvalidInputError, ZeroShotClientError

DEFAULT_MODEL = "zero_shot"
# the ensemble's tensors (the server declares them in zsc_server/tensor_names.py; this package installs alone)
INPUTS = TEXT, CANDIDATE_LABELS, HYPOTHESIS_TEMPLATE, MULTI_LABEL = (
    "TEXT", "CANDIDATE_LABELS", "HYPOTHESIS_TEMPLATE", "MULTI_LABEL")
OUTPUTS = LABELS, SCORES, SERVER_LATENCY_MS = ("LABELS", "SCORES", "SERVER_LATENCY_MS")
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}

Labels = str | Sequence[str]


@dataclasses.dataclass
class ClassificationResult:
    """Labels sorted by score, highest first (as the ModelScope / Hugging Face pipelines return)."""

    text: str
    labels: list[str]
    scores: list[float]
    latency_ms: float  # measured by the client, round trip
    server_latency_ms: float | None = None  # preprocess start to postprocess end, inside Triton

    @property
    def from_cache(self) -> bool:
        """Answered from Triton's response cache, as far as a client can tell: a cached answer carries the
        server time of the request that filled the cache, and when that is longer than this request's whole
        round trip it cannot be this request's. (A cached answer whose first computation was quicker than
        this round trip goes unnoticed.)"""
        return self.server_latency_ms is not None and self.server_latency_ms > self.latency_ms

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"from_cache": self.from_cache}


def call_deadline(protocol: str, seconds: float) -> dict:
    """A call's keyword for its deadline: gRPC takes one per call; over HTTP the connection's (or the asyncio
    session's) timeout applies, set when the client is made."""
    return {"client_timeout": seconds} if protocol == "grpc" else {}


def split_url(url: str, protocol: str) -> tuple[str, bool]:
    """'host:port', 'http://host:port' or 'https://host' -> ('host:port', ssl)."""
    if protocol not in DEFAULT_PORTS:
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    given, ssl = url, url.startswith(("https://", "grpcs://"))
    for scheme in ("http://", "https://", "grpc://", "grpcs://"):
        url = url.removeprefix(scheme)
    url = url.rstrip("/")
    _, colon, port = url.rpartition(":")
    if not colon or url.endswith("]"):  # no port ('[::1]': a bracketed IPv6 address has colons of its own)
        url = f"{url}:{DEFAULT_PORTS[protocol]}"
    elif not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{given!r}: the port must be a number from 1 to 65535, got {port!r}")
    return url, ssl


def _bytes_input(module, name: str, values: Sequence[str | bytes]):
    array = np.array([v.encode("utf-8") if isinstance(v, str) else v for v in values], dtype=np.object_)
    tensor = module.InferInput(name, list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def build_inputs(
    module, text: str | bytes, candidate_labels: Labels, hypothesis_template: str | None,
    multi_label: bool,
) -> list:
    """Ensemble inputs for tritonclient.grpc or tritonclient.http (same InferInput API).

    A single string of labels is sent as one element: the server splits it on ',' and '，'.
    """
    labels = [candidate_labels] if isinstance(candidate_labels, (str, bytes)) else labels_as_given(candidate_labels)
    inputs = [_bytes_input(module, TEXT, [text]), _bytes_input(module, CANDIDATE_LABELS, labels)]
    if hypothesis_template is not None:
        inputs.append(_bytes_input(module, HYPOTHESIS_TEMPLATE, [hypothesis_template]))
    flag = module.InferInput(MULTI_LABEL, [1], "BOOL")
    flag.set_data_from_numpy(np.array([multi_label], dtype=np.bool_))
    inputs.append(flag)
    return inputs


def labels_as_given(candidate_labels: Sequence[str | bytes]) -> list[str | bytes]:
    """A list of labels, sent as it is: InvalidInputError for one label holding ',' or '，', which the server
    would read as a label string and split into several."""
    labels = list(candidate_labels)
    if len(labels) == 1:
        label = labels[0].decode("utf-8", "replace") if isinstance(labels[0], bytes) else labels[0]
        if "," in label or "，" in label:
            raise InvalidInputError(f"label 0 {label!r} contains ',' or '，', and a single label is split there "
                                    "into several: give each label as its own list item")
    return labels


def requested_outputs(module) -> list:
    return [module.InferRequestedOutput(name) for name in OUTPUTS]


def parse_result(response, text: str | bytes, latency_ms: float) -> ClassificationResult:
    answer = {name: response.as_numpy(name) for name in (LABELS, SCORES)}
    missing = [name for name, array in answer.items() if array is None]
    if missing:  # a server that is not this ensemble, or a cache that kept another caller's cut answer
        raise ZeroShotClientError(f"the answer has no {' or '.join(missing)}")
    labels = [raw.decode("utf-8") for raw in answer[LABELS].reshape(-1)]
    scores = [float(s) for s in answer[SCORES].reshape(-1)]
    server = response.as_numpy(SERVER_LATENCY_MS)
    return ClassificationResult(
        text=text.decode("utf-8", "replace") if isinstance(text, bytes) else text,
        labels=labels,
        scores=scores,
        latency_ms=latency_ms,
        server_latency_ms=None if server is None else float(server.reshape(-1)[0]),
    )
