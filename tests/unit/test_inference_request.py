"""zsc_server.inference_request: the outputs a request names, read from KServe v2 JSON and from the
ModelInferRequest protobuf on the wire, against what the protobuf library itself writes."""

from __future__ import annotations

import json

import pytest

from tests.request_properties import model_infer_request
from zsc_server.inference_request import json_problem, protobuf_problem


def test_the_wire_walk_reads_model_and_outputs_past_every_other_field():
    # a raw input holding the bytes that a careless search would take for a request for classification
    raw = b"classification" * 1000
    assert protobuf_problem(model_infer_request(raw=raw)) is None
    asked = model_infer_request(outputs={"SCORES": {}, "LABELS": {"classification": 3}}, raw=raw)
    assert "LABELS asks for the classification extension" in protobuf_problem(asked)
    assert "got ['SCORES']" in protobuf_problem(model_infer_request(outputs={"SCORES": {}}))
    # another model may name any outputs: the response cache is the ensemble's alone
    assert protobuf_problem(model_infer_request("postprocess", {"SCORES": {}})) is None


@pytest.mark.parametrize("message", [b"\xff", b"\x0a\x05ab", b"\x0f", b"\xff" * 11, b""])
def test_a_message_that_is_no_protobuf_is_left_to_tritonserver(message):
    """Truncated fields, unknown wire types, an endless varint, nothing at all: tritonserver refuses them."""
    assert protobuf_problem(message) is None


@pytest.mark.parametrize(("target", "body", "problem"), [
    (b"/v2/models/zero_shot/infer", {"outputs": [{"name": "LABELS"}]}, "name both LABELS and SCORES"),
    (b"/v2/models/zero_shot/versions/1/infer?x=1", {"outputs": [{"name": "SCORES"}]}, "name both"),
    (b"/v2/models/encoder/infer", {"outputs": [{"name": "x", "parameters": {"classification": 1}}]},
     "classification extension"),
    (b"/v2/models/zero_shot/infer", {"inputs": [{"name": "TEXT", "data": ["text classification"]}]}, None),
    (b"/v2/models/zero_shot/infer", {"outputs": "not a list"}, None),  # tritonserver's to refuse
    (b"/v2/models/zero_shot/config", {"outputs": [{"name": "LABELS"}]}, None),  # no inference
])
def test_json_requests(target, body, problem):
    found = json_problem(target, json.dumps(body).encode())
    assert (found is None) if problem is None else (problem in found)
    assert json_problem(b"/v2/models/zero_shot/infer", b"[not json") is None
