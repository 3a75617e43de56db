"""Bad input gets a clear error naming the field; the server keeps answering good requests."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from zsc_client import InvalidInputError, ZeroShotClientError

GOOD = dict(text="我的快递三天了还没到", candidate_labels=["咨询", "投诉", "建议"])

BAD = {
    "empty text": (dict(text="", candidate_labels=["咨询"]), "TEXT: is empty"),
    "blank text": (dict(text="  \n ", candidate_labels=["咨询"]), "TEXT: is empty"),
    "no labels (empty list)": (dict(text="你好", candidate_labels=[]), "CANDIDATE_LABELS: no candidate labels"),
    "no labels (commas only)": (dict(text="你好", candidate_labels=" ,，, "), "CANDIDATE_LABELS: no candidate labels"),
    "empty label in list": (dict(text="你好", candidate_labels=["咨询", " "]), "CANDIDATE_LABELS: label 1 is empty"),
    "zero-width text": (dict(text="\u200b\u200c\ufeff", candidate_labels=["咨询"]), "TEXT: is empty"),
    "zero-width label": (dict(text="你好", candidate_labels="咨询,\u200b\u200b"),
                         "CANDIDATE_LABELS: label 1 ('\\u200b\\u200b') has no visible characters"),
    "template without {}": (dict(text="你好", candidate_labels=["咨询"], hypothesis_template="这是一条文本"),
                            "HYPOTHESIS_TEMPLATE: must contain '{}'"),
    "format-string trick": (dict(text="你好", candidate_labels=["咨询"], hypothesis_template="{0.__class__}"),
                            "HYPOTHESIS_TEMPLATE: must contain '{}'"),
    "invalid UTF-8 text": (dict(text=b"\xff\xfe\xfa", candidate_labels=["咨询"]), "TEXT: is not valid UTF-8"),
    "invalid UTF-8 label": (dict(text="你好", candidate_labels=[b"\xc3\x28", "咨询"]),
                            "CANDIDATE_LABELS: is not valid UTF-8"),
    "10,000 labels": (dict(text="你好", candidate_labels=[f"l{i}" for i in range(10_000)]),
                      "CANDIDATE_LABELS: has 10000 labels; the limit is 64"),
    "10,000 labels in one string": (dict(text="你好", candidate_labels=",".join(f"l{i}" for i in range(10_000))),
                                    "CANDIDATE_LABELS: has 10000 labels; the limit is 64"),
    "1 MB text": (dict(text="投" * 350_000, candidate_labels=["咨询"]), "TEXT: is 1050000 bytes; the limit is 65536"),
    "hypothesis longer than max_length": (
        dict(text="你好", candidate_labels=["投诉" * 40]), "HYPOTHESIS_TEMPLATE: the hypothesis for label 0"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_refused_clearly(structbert, protocol, case):
    kwargs, message = BAD[case]
    with structbert.client(protocol) as client:
        with pytest.raises(InvalidInputError) as raised:
            client.classify(**kwargs)
        assert message in raised.value.message
        assert client.classify(**GOOD).labels  # the next good request is answered


def test_template_braces_are_not_formatted(structbert):
    """A template is never passed to str.format: '{0.__class__}' next to '{}' stays literal text."""
    with structbert.client() as client:
        result = client.classify("你好", ["咨询", "投诉"], hypothesis_template="{}{0.__class__}")
    assert sorted(result.labels) == ["咨询", "投诉"]


def test_max_labels_is_served(structbert):
    with structbert.client() as client:
        result = client.classify("你好", [f"类型{i}" for i in range(64)])
    assert len(result.labels) == 64


def _raw_infer(served, protocol, inputs_spec):
    module = grpcclient if protocol == "grpc" else httpclient
    url = served.server.grpc_url if protocol == "grpc" else served.server.http_url
    client = module.InferenceServerClient(url)
    inputs = []
    for name, array, dtype in inputs_spec:
        tensor = module.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    try:
        return client.infer("zero_shot", inputs)
    finally:
        client.close()


WRONG = {
    "TEXT as INT32": [("TEXT", np.array([1], dtype=np.int32), "INT32"),
                      ("CANDIDATE_LABELS", np.array([b"a"], dtype=object), "BYTES")],
    "TEXT with two elements": [("TEXT", np.array([b"a", b"b"], dtype=object), "BYTES"),
                               ("CANDIDATE_LABELS", np.array([b"a"], dtype=object), "BYTES")],
    "CANDIDATE_LABELS missing": [("TEXT", np.array([b"a"], dtype=object), "BYTES")],
    "MULTI_LABEL as FP32": [("TEXT", np.array([b"a"], dtype=object), "BYTES"),
                            ("CANDIDATE_LABELS", np.array([b"a"], dtype=object), "BYTES"),
                            ("MULTI_LABEL", np.array([1.0], dtype=np.float32), "FP32")],
}


@pytest.mark.parametrize("case", WRONG, ids=list(WRONG))
def test_wrong_shapes_and_dtypes_are_refused(structbert, protocol, case):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as raised:
        _raw_infer(structbert, protocol, WRONG[case])
    assert any(name in raised.value.message() for name in ("TEXT", "CANDIDATE_LABELS", "MULTI_LABEL"))
    with structbert.client(protocol) as client:
        assert client.classify(**GOOD).labels


def test_unreachable_server_is_a_client_error():
    from zsc_client import ServerUnavailableError, ZeroShotClient

    with ZeroShotClient("127.0.0.1:9", "grpc", timeout_s=5) as client:
        with pytest.raises(ServerUnavailableError):
            client.classify(**GOOD)
    with ZeroShotClient("127.0.0.1:9", "http", timeout_s=5) as client:
        with pytest.raises(ZeroShotClientError):
            client.classify(**GOOD)
