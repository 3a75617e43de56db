"""What an inference request asks of its outputs, checked by both fronts (zsc_server.http_front, grpc_front)
before tritonserver reads it:

- the classification extension (an output's `classification` parameter) on a BYTES output such as LABELS
  kills tritonserver 2.51 (SIGFPE, measured over HTTP and gRPC); no zero-shot answer needs it (the labels come
  ranked), so it is refused on every output;
- Triton's response cache keys a request by its inputs, not by the outputs it names: a request for LABELS
  alone filled the cache with an answer that other callers, asking for the scores too, then got without them.
  A request to the ensemble that names outputs must name the answer, LABELS and SCORES (it may leave out
  SERVER_LATENCY_MS, which clients read as optional).

The request is read only as far as that needs: the JSON part of a KServe v2 body, or the fields of a
ModelInferRequest protobuf walked on the wire (no generated classes: the launcher runs on the Triton image's
Python). Standard library only.
"""

from __future__ import annotations

import json
import re

from zsc_server import tensor_names as names

ENSEMBLE = "zero_shot"
ANSWER = (names.LABELS, names.SCORES)
CLASSIFICATION = "classification"
# POST /v2/models/<name>[/versions/<v>]/infer, ending the path; /generate and /generate_stream are Triton's
# routes for decoupled and LLM models, which would skip the fronts' admission control: not served
INFER_PATH = re.compile(rb"/v2/models/([^/?]+)(?:/versions/[^/?]+)?/infer(?:\?.*)?$")
GENERATE_PATH = re.compile(rb"/generate(?:_stream)?$")


def is_infer(target: bytes) -> bool:
    """Whether a request target is an inference call (any path ending in /infer: what Triton routes there)."""
    return target.split(b"?")[0].endswith(b"/infer")
# ModelInferRequest (grpc_service.proto): model_name = 1, outputs = 6; InferRequestedOutputTensor: name = 1,
# parameters = 2 (a map: entries whose key = 1)
MODEL_NAME, OUTPUTS, OUTPUT_NAME, OUTPUT_PARAMETERS, ENTRY_KEY = 1, 6, 1, 2, 1


def outputs_problem(model: str, outputs: list[tuple[str, set[str]]]) -> str | None:
    """Why tritonserver must not see a request to `model` naming `outputs` ((name, parameter keys) each), as
    the error to answer; None when it may."""
    for name, parameters in outputs:
        if CLASSIFICATION in parameters:
            return (f"outputs: {name} asks for the classification extension, which this server does not serve "
                    "(the labels come ranked, with their scores)")
    requested = {name for name, _ in outputs}
    if model == ENSEMBLE and requested and not set(ANSWER) <= requested:
        return (f"outputs: name both {' and '.join(ANSWER)}, or no outputs (got {sorted(requested)}): the "
                "response cache gives requests with the same inputs one answer, whatever outputs they name")
    return None


def json_problem(target: bytes, json_part: bytes) -> str | None:
    """outputs_problem of a KServe v2 JSON request to `target` (None for other targets, and for a body that
    is no JSON object: tritonserver refuses that itself)."""
    if not is_infer(target) or (b'"outputs"' not in json_part and CLASSIFICATION.encode() not in json_part):
        return None
    route = INFER_PATH.search(target)
    try:
        outputs = json.loads(json_part).get("outputs") or []
        requested = [(str(output.get("name")), set(output.get("parameters") or {})) for output in outputs]
    except (ValueError, AttributeError, TypeError):
        return None
    return outputs_problem(route.group(1).decode("utf-8", "replace") if route else "", requested)


def protobuf_problem(message: bytes) -> str | None:
    """outputs_problem of a serialized ModelInferRequest (None for one that is not well formed: tritonserver
    refuses that itself)."""
    try:
        model, requested = "", []
        for number, value in _fields(message):
            if number == MODEL_NAME and isinstance(value, memoryview):
                model = bytes(value).decode("utf-8", "replace")
            elif number == OUTPUTS and isinstance(value, memoryview):
                requested.append(_requested_output(value))
    except ValueError:
        return None
    return outputs_problem(model, requested)


def _requested_output(message: memoryview) -> tuple[str, set[str]]:
    name, parameters = "", set()
    for number, value in _fields(message):
        if number == OUTPUT_NAME and isinstance(value, memoryview):
            name = bytes(value).decode("utf-8", "replace")
        elif number == OUTPUT_PARAMETERS and isinstance(value, memoryview):
            parameters |= {bytes(key).decode("utf-8", "replace") for entry_number, key in _fields(value)
                           if entry_number == ENTRY_KEY and isinstance(key, memoryview)}
    return name, parameters


def _fields(message: bytes | memoryview):
    """(field number, value) of a protobuf message's fields, in wire order: an int for a varint, a memoryview
    (no copy) for length-delimited and fixed-size fields. ValueError where the wire format breaks."""
    view, at = memoryview(message), 0
    while at < len(view):
        key, at = _varint(view, at)
        wire = key & 7
        if wire == 0:
            value, at = _varint(view, at)
        elif wire in (1, 2, 5):
            size = 8 if wire == 1 else 4 if wire == 5 else None
            if size is None:
                size, at = _varint(view, at)
            if at + size > len(view):
                raise ValueError("a field runs past the message's end")
            value, at = view[at:at + size], at + size
        else:
            raise ValueError(f"wire type {wire}")
        yield key >> 3, value


def _varint(view: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(view) and shift < 64:
        byte = view[at]
        value, at, shift = value | (byte & 0x7F) << shift, at + 1, shift + 7
        if byte < 0x80:
            return value, at
    raise ValueError("a varint runs past the message's end, or over 64 bits")
