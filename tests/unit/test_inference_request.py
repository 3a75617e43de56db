"""zsc_server.inference_request: the model and the outputs a request names, read from KServe v2 JSON and from
the ModelInferRequest protobuf on the wire, against what the protobuf library itself writes."""

from __future__ import annotations

import json

import pytest

from tests.request_properties import model_infer_request
from zsc_server.inference_request import json_problem, protobuf_problem

INFER = b"/v2/models/zero_shot/infer"


def problem_of(found) -> str | None:
    """The message of a problem, with its status checked against its kind."""
    if found is None:
        return None
    status, message = found
    assert status == (403 if "is not served on this port" in message else 400), found
    return message


def test_the_wire_walk_reads_model_and_outputs_past_every_other_field():
    # a raw input holding the bytes that a careless search would take for a request for classification
    raw = b"classification" * 1000
    assert protobuf_problem(model_infer_request(raw=raw)) is None
    assert protobuf_problem(model_infer_request(outputs={"LABELS": {}, "SCORES": {}})) is None
    asked = model_infer_request(outputs={"SCORES": {}, "LABELS": {"classification": 3}}, raw=raw)
    assert "LABELS asks for the classification extension" in problem_of(protobuf_problem(asked))
    assert "got ['SCORES']" in problem_of(protobuf_problem(model_infer_request(outputs={"SCORES": {}})))
    # the ensemble's steps are not served on the public ports, whatever they ask
    for model in ("encoder", "preprocess", "postprocess", ""):
        assert "is not served on this port" in problem_of(protobuf_problem(model_infer_request(model)))


def test_a_field_of_another_wire_type_is_skipped_as_protobuf_skips_it():
    """Field 6 sent as fixed64 is 8 bytes, room for an output named SCORES: protobuf skips it (a known field
    with the wrong wire type), so the walk must too, or Triton would see LABELS alone."""
    from tritonclient.grpc import service_pb2

    wire = model_infer_request(outputs={"LABELS": {}})
    phantom = wire + bytes([6 << 3 | 1]) + b"\x0a\x06SCORES"
    assert [output.name for output in service_pb2.ModelInferRequest.FromString(phantom).outputs] == ["LABELS"]
    assert "got ['LABELS']" in problem_of(protobuf_problem(phantom))


def test_reading_a_request_costs_the_front_little_whatever_it_holds():
    """1 MiB of empty outputs took 2.2 s to walk, 1 MiB of empty JSON objects 100 ms to parse: both are
    refused once past what a real request holds, after a bounded look."""
    import time

    fields = b"\x0a\x09zero_shot" + b"\x32\x00" * 524_000
    objects = b'{"inputs": [' + b"{}," * 300_000 + b"{}]}"
    started = time.perf_counter()
    assert "over 1024 fields" in problem_of(protobuf_problem(fields))
    assert "objects and arrays" in problem_of(json_problem(INFER, objects))
    assert time.perf_counter() - started < 0.5  # a few ms here; the unbounded walk took 2.3 s


@pytest.mark.parametrize("message", [b"\xff", b"\x0a\x05ab", b"\x0b", b"\xff" * 11])
def test_a_message_the_walk_cannot_read_is_refused_not_passed_on_unchecked(message):
    """Truncated fields, groups (wire types 3 and 4, which protobuf parsers skip), an endless varint: Triton
    might read outputs in them that the walk did not."""
    assert "no ModelInferRequest this server can read" in problem_of(protobuf_problem(message))


@pytest.mark.parametrize(("target", "body", "problem"), [
    (INFER, {"outputs": [{"name": "LABELS"}, {"name": "SCORES"}]}, None),
    (INFER, {"inputs": [{"name": "TEXT", "data": ["text classification"]}]}, None),
    (INFER, {"outputs": [{"name": "LABELS"}]}, "name both LABELS and SCORES"),
    (b"/v2/models/zero_shot/versions/1/infer?x=1", {"outputs": [{"name": "SCORES"}]}, "name both"),
    (INFER, {"outputs": [{"name": "LABELS", "parameters": {"classification": 1}}, {"name": "SCORES"}]},
     "classification extension"),
    (b"/v2/models/encoder/infer", {"inputs": []}, "is not served on this port"),
    (INFER, {"outputs": "not a list"}, "cannot be read here: outputs[0] has no name"),
    (INFER, {"outputs": [{"nam": "LABELS"}]}, "outputs[0] has no name"),
    (b"/v2/models/zero_shot/config", {"outputs": [{"name": "LABELS"}]}, None),  # no inference
])
def test_json_requests(target, body, problem):
    found = problem_of(json_problem(target, json.dumps(body).encode()))
    assert (found is None) if problem is None else (problem in found)


@pytest.mark.parametrize("body", [
    b'{"\\u006futputs": [{"name": "LABELS"}]}',  # the key written with an escape, as Triton decodes it too
    b'{"outputs": [{"name": "LABELS", "parameters": {"classification": 1}}], "outputs": []}',  # Triton: the first
    b'{"inputs": ["\xff"], "outputs": [{"name": "LABELS", "parameters": {"classification": 1}}]}',  # no UTF-8
])
def test_json_that_could_read_otherwise_to_triton_is_refused(body):
    assert problem_of(json_problem(INFER, body)) is not None
