"""Clients we did not write, against the served ensemble `zero_shot` (the structbert fixture's server):

- PyTriton's `ModelClient` (nvidia-pytriton, over tritonclient), gRPC and HTTP;
- `open-inference-grpc`: stubs generated from the Open Inference Protocol's own proto, gRPC. In a
  subprocess (tests/open_inference_grpc_calls.py): its messages and tritonclient's cannot share a process;
- `open-inference-openapi`: a client generated from the protocol's OpenAPI spec, HTTP.

Each one: health, server and model metadata (as far as its API goes), an answer without and with the
optional inputs (HYPOTHESIS_TEMPLATE, MULTI_LABEL) equal to the reference model's, and the error code of
a bad request. Every request has its own text, so that the response cache answers none of them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from open_inference.openapi import BadRequestError, InferenceRequest, RequestInput, TensorData
from open_inference.openapi.client import OpenInferenceClient
from open_inference.openapi.core.api_error import ApiError
from pytriton.client import ModelClient
from pytriton.client.exceptions import PyTritonClientInferenceServerError

from tests.answers import assert_matches

LABELS = ["物流", "退款", "表扬"]
TEMPLATE = "这条工单是关于{}的"
INPUTS = [["TEXT", "BYTES", [1]], ["CANDIDATE_LABELS", "BYTES", [-1]], ["HYPOTHESIS_TEMPLATE", "BYTES", [1]],
          ["MULTI_LABEL", "BOOL", [1]]]
OUTPUTS = [["LABELS", "BYTES", [-1]], ["SCORES", "FP32", [-1]], ["SERVER_LATENCY_MS", "FP32", [1]]]
EMPTY_TEXT = "in ensemble 'zero_shot', TEXT: is empty"
BOOL_AS_NUMBER_GRPC = ("unexpected explicit tensor data for input tensor 'MULTI_LABEL' for model 'zero_shot' of "
                       "type 'INT32', expected datatype 'BOOL'")
WRONG_DTYPE = "inference input 'MULTI_LABEL' data-type is 'INT32', but model 'zero_shot' expects 'BOOL'"


def text_for(client: str) -> str:
    return f"{client}：我的快递三天了还没到，请帮我查一下物流"


def assert_answers(served, text: str, labels, scores, optional: bool) -> None:
    """`labels`/`scores` are the served answer to `text` with LABELS (and TEMPLATE, multi-label if
    `optional`): equal to the reference model's."""
    kwargs = dict(hypothesis_template=TEMPLATE, multi_label=True) if optional else {}
    expected = served.reference(text=text, candidate_labels=LABELS, **kwargs)
    assert_matches(SimpleNamespace(labels=list(labels), scores=np.asarray(scores, dtype=np.float64)), *expected)


def assert_server_metadata(name: str, version: str, extensions) -> None:
    assert name == "triton" and re.fullmatch(r"\d+\.\d+\.\d+", version), (name, version)
    assert "binary_tensor_data" in extensions and "model_configuration" in extensions


@pytest.mark.parametrize("scheme", ["grpc", "http"])
# PyTriton notes that tritonclient.grpc has no timeout for calls other than infer
@pytest.mark.filterwarnings("ignore::pytriton.client.warnings.NotSupportedTimeoutWarning")
def test_pytriton_model_client(structbert, scheme):
    url = structbert.server.grpc_url if scheme == "grpc" else structbert.server.http_url
    labels = np.array([label.encode() for label in LABELS], dtype=object)
    with ModelClient(f"{scheme}://{url}", "zero_shot") as client:
        client.wait_for_server(60)  # health: server ready, then the model
        client.wait_for_model(60)
        config = client.model_config  # what ModelClient reads of the model: its configuration
        assert config.max_batch_size == 0 and not config.decoupled
        assert [(spec.name, spec.optional) for spec in config.inputs] == [(name, True) for name, _, _ in INPUTS]
        assert [spec.name for spec in config.outputs] == [name for name, _, _ in OUTPUTS]
        for optional in (False, True):
            text = text_for(f"pytriton {scheme} {optional}")
            inputs = dict(TEXT=np.array([text.encode()], dtype=object), CANDIDATE_LABELS=labels)
            if optional:
                inputs.update(HYPOTHESIS_TEMPLATE=np.array([TEMPLATE.encode()], dtype=object),
                              MULTI_LABEL=np.array([True]))
            result = client.infer_sample(**inputs)
            assert_answers(structbert, text, [label.decode() for label in result["LABELS"]], result["SCORES"],
                           optional)
        code = "StatusCode.INVALID_ARGUMENT" if scheme == "grpc" else "400"
        for inputs, message in (
                (dict(TEXT=np.array([b""], dtype=object), CANDIDATE_LABELS=labels), EMPTY_TEXT),
                (dict(TEXT=np.array([b"x"], dtype=object), CANDIDATE_LABELS=labels,
                      MULTI_LABEL=np.array([1], dtype=np.int32)), WRONG_DTYPE)):
            with pytest.raises(PyTritonClientInferenceServerError) as raised:
                client.infer_sample(**inputs)
            assert message in raised.value.message
            assert raised.value.__cause__.status() == code  # the tritonclient error it wraps


def test_open_inference_grpc(structbert):
    texts = {optional: text_for(f"open-inference-grpc {optional}") for optional in (False, True)}
    cases = {
        "answers": {
            "required only": {"TEXT": [texts[False]], "CANDIDATE_LABELS": LABELS},
            "with the optional inputs": {"TEXT": [texts[True]], "CANDIDATE_LABELS": LABELS,
                                         "HYPOTHESIS_TEMPLATE": [TEMPLATE], "MULTI_LABEL": [True]},
        },
        "errors": {
            "empty text": {"TEXT": [""], "CANDIDATE_LABELS": LABELS},
            "MULTI_LABEL as INT32": {"TEXT": ["x"], "CANDIDATE_LABELS": LABELS, "MULTI_LABEL_INT32": [1]},
            "BOOL sent as a number": {"TEXT": ["x"], "CANDIDATE_LABELS": LABELS, "MULTI_LABEL_INT_CONTENTS": [1]},
        },
    }
    run = subprocess.run([sys.executable, "-m", "tests.open_inference_grpc_calls", structbert.server.grpc_url,
                          json.dumps(cases)], capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout)
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert_server_metadata(**seen["server_metadata"])
    model = seen["model_metadata"]
    assert (model["name"], model["platform"], model["versions"]) == ("zero_shot", "ensemble", ["1"])
    assert (model["inputs"], model["outputs"]) == (INPUTS, OUTPUTS)
    for optional, case in ((False, "required only"), (True, "with the optional inputs")):
        answer = seen["answers"][case]
        assert_answers(structbert, texts[optional], answer["LABELS"], answer["SCORES"], optional)
    errors = seen["errors"]
    assert errors["empty text"] == {"code": "INVALID_ARGUMENT", "details": EMPTY_TEXT}
    assert errors["MULTI_LABEL as INT32"]["code"] == "INVALID_ARGUMENT"
    assert WRONG_DTYPE in errors["MULTI_LABEL as INT32"]["details"]
    # what Triton answers before our code sees the request (docs/limits-failures-security.md's table;
    # test_malformed_requests.py for HTTP)
    assert errors["BOOL sent as a number"] == {"code": "INVALID_ARGUMENT", "details": BOOL_AS_NUMBER_GRPC}
    assert errors["unknown model"] == {"code": "NOT_FOUND",
                                       "details": "Request for unknown model: 'no_such_model' is not found"}


def bytes_input(name: str, values: list[str]) -> RequestInput:
    return RequestInput(name=name, shape=[len(values)], datatype="BYTES", data=values)


def test_open_inference_openapi(structbert):
    client = OpenInferenceClient(base_url=f"http://{structbert.server.http_url}", timeout=60)
    client.check_server_liveness()  # each raises unless the server answers 200
    client.check_server_readiness()
    client.check_model_readiness("zero_shot")
    server = client.read_server_metadata()
    assert_server_metadata(server.name, server.version, server.extensions)
    model = client.read_model_metadata("zero_shot")
    assert (model.name, model.platform, model.versions) == ("zero_shot", "ensemble", ["1"])
    assert [[t.name, t.datatype, t.shape] for t in model.inputs] == INPUTS
    assert [[t.name, t.datatype, t.shape] for t in model.outputs] == OUTPUTS

    def infer(text: str, *extra: RequestInput) -> dict:
        response = client.model_infer("zero_shot", request=InferenceRequest(
            inputs=[bytes_input("TEXT", [text]), bytes_input("CANDIDATE_LABELS", LABELS), *extra]))
        return {output.name: output.data.__root__ for output in response.outputs}

    text = text_for("open-inference-openapi")
    answer = infer(text)
    assert_answers(structbert, text, answer["LABELS"], answer["SCORES"], optional=False)

    # This client's TensorData tries float before bool, so MULTI_LABEL=[True] goes out as [1.0], which
    # Triton refuses (HTTP 500, see test_malformed_requests.py). Built without validation, it goes out as true.
    template = bytes_input("HYPOTHESIS_TEMPLATE", [TEMPLATE])
    with pytest.raises(ApiError) as raised:
        infer(text_for("open-inference-openapi, validated bool"), template,
              RequestInput(name="MULTI_LABEL", shape=[1], datatype="BOOL", data=[True]))
    assert raised.value.status_code == 500
    assert raised.value.body == {"error": "Unable to parse 'data': attempt to access JSON non-boolean as boolean"}
    multi_label = RequestInput.construct(name="MULTI_LABEL", shape=[1], datatype="BOOL",
                                         data=TensorData.construct(__root__=[True]))
    text = text_for("open-inference-openapi, optional inputs")
    answer = infer(text, template, multi_label)
    assert_answers(structbert, text, answer["LABELS"], answer["SCORES"], optional=True)

    with pytest.raises(BadRequestError) as raised:
        infer("")
    assert raised.value.status_code == 400 and raised.value.body == {"error": EMPTY_TEXT}
    with pytest.raises(ApiError) as raised:
        client.read_model_metadata("no_such_model")
    assert raised.value.status_code == 404
