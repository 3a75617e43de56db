"""What Triton itself answers to malformed requests, which never reach our preprocess
(docs/limits-failures-security.md, the table of Triton's own answers): exact status, Content-Type and message, pinned
against the real server so that the table stays true. The messages are Triton 2.51's."""

from __future__ import annotations

import http.client
import json

import grpc
import pytest

TEXT = {"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["我的快递还没到"]}
LABELS = {"name": "CANDIDATE_LABELS", "shape": [2], "datatype": "BYTES", "data": ["物流", "退款"]}


def body(*inputs: dict) -> bytes:
    return json.dumps({"inputs": list(inputs)}, ensure_ascii=False).encode()


def multi_label(data) -> dict:
    return {"name": "MULTI_LABEL", "shape": [1], "datatype": "BOOL", "data": [data]}


# case: (method, path, body, status, Content-Type, exact body)
HTTP = {
    "body is not JSON": (
        "POST", "/v2/models/zero_shot/infer", b'{"inputs": [', 500, "application/json",
        {"error": "failed to parse the request JSON buffer: Invalid value. at 12"}),
    "no inputs member": (
        "POST", "/v2/models/zero_shot/infer", b"{}", 500, "application/json",
        {"error": "Unable to parse 'inputs': attempt to access non-existing object member 'inputs'"}),
    "BOOL sent as a number": (
        "POST", "/v2/models/zero_shot/infer", body(TEXT, LABELS, multi_label(1)), 500, "application/json",
        {"error": "Unable to parse 'data': attempt to access JSON non-boolean as boolean"}),
    "BOOL sent as a string": (
        "POST", "/v2/models/zero_shot/infer", body(TEXT, LABELS, multi_label("true")), 500, "application/json",
        {"error": "Unable to parse 'data': attempt to access JSON non-boolean as boolean"}),
    "BYTES element that is a number": (
        "POST", "/v2/models/zero_shot/infer", body(dict(TEXT, data=[5]), LABELS), 500, "application/json",
        {"error": "Unable to parse JSON bytes array: attempt to access JSON non-string as string"}),
    "empty body": (
        "POST", "/v2/models/zero_shot/infer", b"", 400, "application/json",
        {"error": "[request id: <id_unknown>] Raw request must only have 1 input (found 1) to be deduced but got 4 "
                  "inputs in 'zero_shot' model configuration"}),
    "unknown datatype": (
        "POST", "/v2/models/zero_shot/infer", body(dict(TEXT, datatype="STRING"), LABELS), 400, "application/json",
        {"error": "invalid datatype for input TEXT"}),
    "datatype other than the model's": (
        "POST", "/v2/models/zero_shot/infer", body(dict(TEXT, datatype="INT32", data=[5]), LABELS), 400,
        "application/json", {"error": "[request id: <id_unknown>] inference input 'TEXT' data-type is 'INT32', but "
                                      "model 'zero_shot' expects 'BYTES'"}),
    "more elements than the shape": (
        "POST", "/v2/models/zero_shot/infer", body(dict(TEXT, data=["a", "b"]), LABELS), 400, "application/json",
        {"error": "[request id: <id_unknown>] unexpected number of string elements 2 for inference input 'TEXT' "
                  "for model 'zero_shot', expecting 1"}),
    "input the model does not have": (
        "POST", "/v2/models/zero_shot/infer", body(TEXT, LABELS, dict(TEXT, name="FOO")), 400, "application/json",
        {"error": "unexpected inference input 'FOO' for model 'zero_shot'"}),
    "unknown model": (
        "POST", "/v2/models/no_such_model/infer", body(TEXT, LABELS), 404, "text/plain",
        {"error": "Request for unknown model: 'no_such_model' is not found"}),
    "GET on infer": ("GET", "/v2/models/zero_shot/infer", None, 405, "text/plain", {"error": "Method Not Allowed"}),
    # refused inside the ensemble (by our preprocess): JSON, but labelled text/plain
    "error from a model of the ensemble": (
        "POST", "/v2/models/zero_shot/infer", body(dict(TEXT, data=[""]), LABELS), 400, "text/plain",
        {"error": "in ensemble 'zero_shot', TEXT: is empty"}),
}


@pytest.mark.parametrize("case", HTTP, ids=list(HTTP))
def test_what_triton_answers_over_http(structbert, case):
    method, path, payload, status, content_type, answer = HTTP[case]
    host, port = structbert.server.http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        got = (response.status, response.getheader("Content-Type"), json.loads(response.read()))
    finally:
        connection.close()
    assert got == (status, content_type, answer)
    with structbert.client("http") as client:  # and the server answers the next good request
        assert client.classify("我的快递还没到", ["物流", "退款"]).labels


def test_what_triton_answers_to_bytes_that_are_not_a_grpc_request(structbert):
    """gRPC's counterpart of malformed JSON (the other gRPC answers: test_third_party_clients.py)."""
    with grpc.insecure_channel(structbert.server.grpc_url) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                    request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
        with pytest.raises(grpc.RpcError) as raised:
            infer(b"\xff\xff\xff not a ModelInferRequest", timeout=60)
    assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.INTERNAL, "Unable to parse request")
