"""Property-based fuzzing of the ensemble's inputs through gRPC and HTTP.

Every generated request must get either a client error (INVALID_ARGUMENT / 400) whose message names an
input at fault, or a valid answer: the cleaned candidate labels, each once, with finite scores in [0, 1]
sorted high to low. After each example a fresh good request must still be answered and the server must
still be live and ready. An independent oracle (the ensemble's declared inputs plus the served limits,
read from the preprocess config) says which of the two each request deserves, so a refused good request
or an answered bad one fails too.

The oracle and the strategies live in tests/request_properties.py; the unit tests hold the preprocess to them
on many more examples without a server (tests/unit/test_request_properties.py), so these check fewer, for what
only the served path adds: Triton's own checks of the tensors, the status each protocol maps a refusal to,
the server still answering after each. CI runs a short, derandomized profile; ZSC_FUZZ_EXAMPLES=2000 runs
that many random examples per test.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tritonclient.utils import InferenceServerException

from loadtest.workload import ClassifyRequest, answer_problem
from tests.reference import parse_labels
from tests.request_properties import (
    ANY_TEXT,
    FORMAT_TRICKS,
    HOSTILE,
    HOSTILE_UTF8,
    MULTI_LABELS,
    PLAUSIBLE,
    Expected,
    expected_answer,
)
from zsc_client import InvalidInputError, ZeroShotClient, ZeroShotClientError
from zsc_server.settings import ScoringSettings

LONG_RUN = int(os.environ.get("ZSC_FUZZ_EXAMPLES", "0"))
TIMEOUT_S = 30.0  # per request: a hang fails the example instead of the whole run
CLIENT_ERROR = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}
# dims and datatypes as the ensemble declares them (export/repository.py); the oracle checks against this
DECLARED = {"TEXT": ("BYTES", 1), "CANDIDATE_LABELS": ("BYTES", -1), "HYPOTHESIS_TEMPLATE": ("BYTES", 1),
            "MULTI_LABEL": ("BOOL", 1)}
REQUIRED = ("TEXT", "CANDIDATE_LABELS")


def fuzz_settings(ci_examples: int):
    return settings(max_examples=LONG_RUN or ci_examples, deadline=None, derandomize=not LONG_RUN,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


# ---------------------------------------------------------------- strategies



@dataclasses.dataclass
class Tensor:
    name: str
    array: np.ndarray
    datatype: str


def _bytes_tensor(name: str, values: list[bytes]) -> Tensor:
    return Tensor(name, np.array(values, dtype=np.object_).reshape(len(values)), "BYTES")


# Wrong shapes, datatypes, missing and unknown inputs, each in place of the input it names (None: left out).
MUTATIONS = {
    "TEXT as INT32": Tensor("TEXT", np.array([7], np.int32), "INT32"),
    "TEXT as FP32": Tensor("TEXT", np.array([1.5], np.float32), "FP32"),
    "TEXT shape [2]": _bytes_tensor("TEXT", [b"a", b"b"]),
    "TEXT shape [0]": _bytes_tensor("TEXT", []),
    "TEXT shape [1,1]": Tensor("TEXT", np.array([[b"a"]], dtype=np.object_), "BYTES"),
    "TEXT missing": None,
    "CANDIDATE_LABELS as INT64": Tensor("CANDIDATE_LABELS", np.arange(3, dtype=np.int64), "INT64"),
    "CANDIDATE_LABELS shape [2,1]": Tensor("CANDIDATE_LABELS", np.array([[b"a"], [b"b"]], dtype=np.object_), "BYTES"),
    "CANDIDATE_LABELS missing": None,
    "HYPOTHESIS_TEMPLATE shape [2]": _bytes_tensor("HYPOTHESIS_TEMPLATE", [b"{}", b"{}"]),
    "HYPOTHESIS_TEMPLATE as BOOL": Tensor("HYPOTHESIS_TEMPLATE", np.array([True]), "BOOL"),
    "MULTI_LABEL as BYTES": _bytes_tensor("MULTI_LABEL", [b"true"]),
    "MULTI_LABEL as INT8": Tensor("MULTI_LABEL", np.array([1], np.int8), "INT8"),
    "MULTI_LABEL shape [2]": Tensor("MULTI_LABEL", np.array([True, False]), "BOOL"),
    "MULTI_LABEL shape [0]": Tensor("MULTI_LABEL", np.zeros([0], np.bool_), "BOOL"),
    "FOO (unknown input)": _bytes_tensor("FOO", [b"x"]),
}


class Case:
    """One request's tensors; printed short, as a 1 MB text would drown hypothesis's failure report."""

    def __init__(self, tensors: list[Tensor], mutation: str | None) -> None:
        self.tensors, self.mutation = tensors, mutation

    def __repr__(self) -> str:
        parts = [f"{t.name}:{t.datatype}{list(t.array.shape)}={_short(t.array)}" for t in self.tensors]
        return f"Case({', '.join(parts)}, mutation={self.mutation!r})"

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis's pretty-printer calls
        printer.text(repr(self))


def _short(array: np.ndarray) -> str:
    text = repr(array.reshape(-1)[:4].tolist())
    return text if len(text) < 160 else text[:160] + f"...({array.size} elements)"


@st.composite
def cases(draw, utf8_only: bool = False) -> Case:
    kind = draw(st.sampled_from(["plausible", "hostile"]))
    parts = PLAUSIBLE if kind == "plausible" else HOSTILE_UTF8 if utf8_only else HOSTILE
    tensors = {"TEXT": _bytes_tensor("TEXT", [draw(parts["text"])]),
               "CANDIDATE_LABELS": _bytes_tensor("CANDIDATE_LABELS", draw(parts["labels"]))}
    template, multi_label = draw(parts["template"]), draw(MULTI_LABELS)
    if template is not None:
        tensors["HYPOTHESIS_TEMPLATE"] = _bytes_tensor("HYPOTHESIS_TEMPLATE", [template])
    if multi_label is not None:
        tensors["MULTI_LABEL"] = Tensor("MULTI_LABEL", np.array([multi_label]), "BOOL")
    mutation = draw(st.none() | st.none() | st.none() | st.sampled_from(sorted(MUTATIONS)))
    if mutation is not None:
        tensors.pop(mutation.split()[0], None)
        if MUTATIONS[mutation] is not None:
            tensors[mutation.split()[0]] = MUTATIONS[mutation]
    order = draw(st.permutations(sorted(tensors)))
    return Case([tensors[name] for name in order], mutation)


# ---------------------------------------------------------------- the oracle

def expected_outcome(case: Case, served: ScoringSettings, tokenizer: Tokenizer) -> Expected:
    tensors = {t.name: t for t in case.tensors}
    contract = set(tensors) - set(DECLARED) | {n for n in REQUIRED if n not in tensors}
    for name, tensor in tensors.items():
        if name in DECLARED:
            datatype, dim = DECLARED[name]
            if tensor.datatype != datatype or tensor.array.ndim != 1 or dim != -1 and tensor.array.shape != (dim,):
                contract.add(name)
    if contract:  # Triton refuses these before any model runs
        return Expected(contract)
    template = tensors["HYPOTHESIS_TEMPLATE"].array[0] if "HYPOTHESIS_TEMPLATE" in tensors else None
    multi = bool(tensors["MULTI_LABEL"].array[0]) if "MULTI_LABEL" in tensors else None
    return expected_answer(tensors["TEXT"].array[0], list(tensors["CANDIDATE_LABELS"].array), template, multi,
                           served, tokenizer)


# ---------------------------------------------------------------- sending and checking

@pytest.fixture(scope="module")
def fuzz_target(structbert):
    """Raw clients for both protocols, the served limits and the tokenizer the oracle counts with."""
    http = httpclient.InferenceServerClient(structbert.server.http_url, connection_timeout=TIMEOUT_S,
                                            network_timeout=TIMEOUT_S)
    grpc = grpcclient.InferenceServerClient(structbert.server.grpc_url)
    served = ScoringSettings.from_model_config(http.get_model_config("preprocess"))
    # every input optional: Triton 2.51 checks how many inputs came, not which, so a missing required one (with
    # an optional one sent) left the ensemble waiting ('unexpected deadlock'); the preprocess names it instead
    declared_required = {i["name"] for i in http.get_model_config("zero_shot")["input"] if not i.get("optional")}
    assert declared_required == set(), declared_required
    tokenizer = Tokenizer.from_file(str(structbert.repository / "preprocess" / "1" / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    clients = {protocol: ZeroShotClient(url, protocol, timeout_s=TIMEOUT_S) for protocol, url in
               (("grpc", structbert.server.grpc_url), ("http", structbert.server.http_url))}
    yield {"grpc": grpc, "http": http, "served": served, "tokenizer": tokenizer, "sent": itertools.count(),
           "zsc": clients}
    for client in (http, grpc, *clients.values()):
        client.close()


def send(target, protocol: str, tensors: list[Tensor], binary: bool = True):
    module = grpcclient if protocol == "grpc" else httpclient
    inputs = []
    for tensor in tensors:
        infer_input = module.InferInput(tensor.name, list(tensor.array.shape), tensor.datatype)
        if protocol == "http":
            infer_input.set_data_from_numpy(tensor.array, binary_data=binary)
        else:
            infer_input.set_data_from_numpy(tensor.array)
        inputs.append(infer_input)
    if protocol == "grpc":
        outputs = [module.InferRequestedOutput(name) for name in ("LABELS", "SCORES", "SERVER_LATENCY_MS")]
        return target["grpc"].infer("zero_shot", inputs, outputs=outputs, client_timeout=TIMEOUT_S)
    outputs = [module.InferRequestedOutput(name, binary_data=binary) for name in ("LABELS", "SCORES")]
    return target["http"].infer("zero_shot", inputs, outputs=outputs)


def answer_of(response) -> tuple[list[str], list[float]]:
    labels = [v.decode("utf-8") if isinstance(v, bytes) else v for v in response.as_numpy("LABELS").reshape(-1)]
    return labels, [float(s) for s in response.as_numpy("SCORES").reshape(-1)]


def check_answer(expected: Expected, labels: list[str], scores: list[float]) -> None:
    request = ClassifyRequest(expected.text, tuple(expected.labels), expected.multi_label)
    assert all(math.isfinite(s) for s in scores), f"scores {scores}"
    problem = answer_problem(request, labels, scores)
    assert problem is None, problem


def check_still_serving(target, protocol: str) -> None:
    """A good request, new each time so that the response cache cannot answer it, then liveness."""
    n = next(target["sent"])
    text = f"第{n}单：我的快递三天了还没到，请帮我查一下"
    good = [_bytes_tensor("TEXT", [text.encode()]),
            _bytes_tensor("CANDIDATE_LABELS", ["咨询".encode(), "投诉".encode(), b"bug"])]
    labels, scores = answer_of(send(target, protocol, good))
    check_answer(Expected(set(), ["咨询", "投诉", "bug"], text), labels, scores)
    assert target["http"].is_server_live() and target["http"].is_server_ready()
    assert target["http"].is_model_ready("zero_shot")


def check_case(target, protocol: str, case: Case, binary: bool = True) -> None:
    expected = expected_outcome(case, target["served"], target["tokenizer"])
    try:
        response = send(target, protocol, case.tensors, binary)
    except InferenceServerException as exc:
        message = exc.message() or ""
        assert exc.status() == CLIENT_ERROR[protocol], f"not a client error: {exc}"
        assert expected.faults, f"a valid request was refused: {message}"
        event(f"refused: {'/'.join(sorted(expected.faults))}")
        assert any(name in message for name in expected.faults), \
            f"the error names none of {sorted(expected.faults)}: {message}"
    else:
        assert not expected.faults, f"a request with bad {sorted(expected.faults)} was answered"
        check_answer(expected, *answer_of(response))
        event("answered")
    check_still_serving(target, protocol)


# ---------------------------------------------------------------- the tests

@pytest.mark.parametrize("protocol", ["grpc", "http"])
@fuzz_settings(30)
@given(case=cases())
def test_fuzzed_requests_get_a_clear_error_or_a_valid_answer(fuzz_target, protocol, case):
    check_case(fuzz_target, protocol, case)


@fuzz_settings(20)
@given(case=cases(utf8_only=True))
def test_fuzzed_requests_over_http_json(fuzz_target, case):
    """The same through KServe JSON (no binary tensor extension): Triton's JSON parser in the path."""
    check_case(fuzz_target, "http", case, binary=False)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@fuzz_settings(20)
@given(text=ANY_TEXT, candidate_labels=st.one_of(ANY_TEXT, st.lists(ANY_TEXT, max_size=6)),
       template=st.none() | st.lists(st.sampled_from(FORMAT_TRICKS) | ANY_TEXT, max_size=4).map("".join),
       multi_label=st.booleans())
@example(text="x", candidate_labels=["a,b"], template=None, multi_label=False)
@example(text="x", candidate_labels="a,b", template=None, multi_label=False)
def test_client_gets_invalid_input_or_a_valid_answer(fuzz_target, protocol, text, candidate_labels, template,
                                                     multi_label):
    """Through zsc_client: refused input is InvalidInputError naming the field, never another error."""
    tensors = [_bytes_tensor("TEXT", [text.encode()]),
               _bytes_tensor("CANDIDATE_LABELS", [label.encode() for label in (
                   [candidate_labels] if isinstance(candidate_labels, str) else candidate_labels)]),
               Tensor("MULTI_LABEL", np.array([multi_label]), "BOOL")]
    if template is not None:
        tensors.append(_bytes_tensor("HYPOTHESIS_TEMPLATE", [template.encode()]))
    expected = expected_outcome(Case(tensors, None), fuzz_target["served"], fuzz_target["tokenizer"])
    # the client refuses a list of one label with a comma itself: the server would split it into several
    split_by_server = not isinstance(candidate_labels, str) and len(candidate_labels) == 1 and any(
        separator in candidate_labels[0] for separator in ",，")
    try:
        result = fuzz_target["zsc"][protocol].classify(text, candidate_labels, template, multi_label)
    except InvalidInputError as exc:
        if split_by_server:
            assert "give each label as its own list item" in exc.message, exc.message
        else:
            assert expected.faults, f"a valid request was refused: {exc.message}"
            assert any(name in exc.message for name in expected.faults), exc.message
    except ZeroShotClientError as exc:
        pytest.fail(f"{type(exc).__name__} ({exc.status}) instead of an answer or InvalidInputError: {exc}")
    else:
        assert not split_by_server, f"a list of one label with a comma was sent: {candidate_labels}"
        assert not expected.faults, f"a request with bad {sorted(expected.faults)} was answered"
        assert result.text == text
        check_answer(expected, result.labels, result.scores)
    check_still_serving(fuzz_target, protocol)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=12)
INPUT_FIELDS = ("name", "shape", "datatype", "data", "parameters")


@st.composite
def http_bodies(draw) -> tuple[bytes, dict]:
    """Raw bodies for POST .../infer: garbage, arbitrary JSON, and a good body with one part replaced."""
    kind = draw(st.sampled_from(["bytes", "json", "mutated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200)), {}
    if kind == "json":
        return json.dumps(draw(json_values)).encode(), {}
    body = {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["我的快递还没到"]},
                       {"name": "CANDIDATE_LABELS", "shape": [2], "datatype": "BYTES", "data": ["物流", "退款"]}]}
    target = draw(st.sampled_from(body["inputs"]))
    target[draw(st.sampled_from(INPUT_FIELDS))] = draw(json_values)
    encoded = json.dumps(body).encode()
    headers = {}
    if draw(st.booleans()):  # the binary-tensor extension's header length, possibly lying
        tail = draw(st.binary(max_size=40))
        headers["Inference-Header-Content-Length"] = str(draw(st.integers(-5, len(encoded) + len(tail) + 5)))
        encoded += tail
    return encoded, headers


@fuzz_settings(60)
@given(body=http_bodies())
def test_raw_http_bodies_never_break_the_server(structbert, fuzz_target, body):
    """Triton's own HTTP front end: malformed bodies get an error status with a JSON error, nothing else.
    (Triton answers unparsable JSON with 500, its choice; a 200 must hold a valid answer.)"""
    data, headers = body
    request = urllib.request.Request(f"http://{structbert.server.http_url}/v2/models/zero_shot/infer", data=data,
                                     headers={"Content-Type": "application/octet-stream", **headers})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    if status == 200:  # the mutation happened to leave a valid request
        outputs = {o["name"]: o["data"] for o in json.loads(payload)["outputs"]}
        sent = next(i["data"] for i in json.loads(data)["inputs"] if i["name"] == "CANDIDATE_LABELS")
        expected = parse_labels(sent[0]) if len(sent) == 1 else sent
        assert sorted(outputs["LABELS"]) == sorted(expected)
        assert all(0 <= s <= 1 for s in outputs["SCORES"]) and outputs["SCORES"] == sorted(outputs["SCORES"])[::-1]
    else:
        assert status in (400, 500), f"status {status}: {payload[:300]!r}"
        assert isinstance(json.loads(payload)["error"], str)
    check_still_serving(fuzz_target, "http")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("labels, template, message", [
    # 10 MB in one label: 20 s of tokenizing a hypothesis that could never fit, before the byte limit
    ([b"a " * 5_000_000], None, "CANDIDATE_LABELS: are 10000000 bytes in all; the limit is 65536 bytes"),
    # 512 '{}' times 64 labels of 1,000 bytes: 33 MB of hypotheses, 22 s for one request
    ([b"a" * 999 + bytes([65 + i % 26]) for i in range(64)], b"{}" * 512,
     "HYPOTHESIS_TEMPLATE: puts each label in 512 times"),
], ids=["10 MB label", "template multiplying labels"])
def test_hostile_sizes_are_refused_at_once(fuzz_target, protocol, labels, template, message):
    """Regressions: requests that cost a preprocess instance 20 s each (two of them stalled the service)."""
    tensors = [_bytes_tensor("TEXT", [b"hi"]), _bytes_tensor("CANDIDATE_LABELS", labels)]
    if template is not None:
        tensors.append(_bytes_tensor("HYPOTHESIS_TEMPLATE", [template]))
    started = time.monotonic()
    with pytest.raises(InferenceServerException) as raised:
        send(fuzz_target, protocol, tensors)
    assert message in raised.value.message()
    assert time.monotonic() - started < 5
    check_still_serving(fuzz_target, protocol)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("sent, missing", [
    ({"TEXT": b"hi", "HYPOTHESIS_TEMPLATE": b"{}"}, "CANDIDATE_LABELS"),
    ({"CANDIDATE_LABELS": b"a,b", "HYPOTHESIS_TEMPLATE": b"{}"}, "TEXT"),
], ids=["no labels", "no text"])
def test_missing_required_input_is_named(fuzz_target, protocol, sent, missing):
    tensors = [_bytes_tensor(name, [value]) for name, value in sent.items()]
    with pytest.raises(InferenceServerException) as raised:
        send(fuzz_target, protocol, tensors)
    assert missing in raised.value.message()
    check_still_serving(fuzz_target, protocol)
