"""What an inference request may ask on the public ports, checked by both fronts (zsc_server.http_front,
grpc_front) before tritonserver reads it:

- the ensemble only: preprocess, encoder and postprocess are its steps, which no client needs to call; called
  directly they skip the fronts' admission ledger (three clients sending the encoder its largest batches
  left 5 of 35 classifications answered) and show what they check (the launcher and the benchmarks call them
  on tritonserver's own ports);
- the classification extension (an output's `classification` parameter) on a BYTES output such as LABELS
  kills tritonserver 2.51 (SIGFPE, measured over HTTP and gRPC); no zero-shot answer needs it (the labels come
  ranked), so it is refused on every output;
- Triton's response cache keys a request by its inputs, not by the outputs it names: a request for LABELS
  alone filled the cache with an answer that other callers, asking for the scores too, then got without them.
  A request that names outputs must name the answer, LABELS and SCORES (it may leave out SERVER_LATENCY_MS,
  which clients read as optional).

The request is read only as far as that needs: the route, and the JSON part of a KServe v2 body; or the fields
of a ModelInferRequest protobuf walked on the wire (no generated classes: the launcher runs on the Triton
image's Python). A Problem is an HTTP status and a message: 403 for a model not served here, 400 otherwise.
Standard library only.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from zsc_server import tensor_names as names
from zsc_server.http_wire import json_outside_strings

ENSEMBLE = "zero_shot"
ANSWER = (names.LABELS, names.SCORES)
CLASSIFICATION = "classification"
# POST /v2/models/<name>[/versions/<v>]/infer, ending the path; /generate and /generate_stream are Triton's
# routes for decoupled and LLM models, which would skip the fronts' admission control: not served
INFER_PATH = re.compile(rb"/v2/models/([^/?]+)(?:/versions/[^/?]+)?/infer(?:\?.*)?$")
GENERATE_PATH = re.compile(rb"/generate(?:_stream)?$")
# ModelInferRequest (grpc_service.proto): model_name = 1, outputs = 6; InferRequestedOutputTensor: name = 1,
# parameters = 2 (a map: entries whose key = 1); all length-delimited (wire type 2)
MODEL_NAME, OUTPUTS, OUTPUT_NAME, OUTPUT_PARAMETERS, ENTRY_KEY = 1, 6, 1, 2, 1
LENGTH_DELIMITED = 2
# What reading a request may cost the fronts' one event loop: a real request has a few dozen protobuf fields,
# JSON objects and arrays, and a value per label; 1 MiB of empty fields took 2.2 s to walk in Python, and of
# empty JSON objects 100 ms to parse
MAX_FIELDS, MAX_JSON_CONTAINERS, MAX_JSON_VALUES = 1024, 1024, 16384
_NOT_JSON_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{},')))


class Problem(NamedTuple):
    status: int  # HTTP's; the gRPC front answers 403 as PERMISSION_DENIED and 400 as INVALID_ARGUMENT
    message: str

    @property
    def reason(self) -> str:
        """The fronts' counter for the refusal."""
        return "not_served" if self.status == 403 else "outputs"


def is_infer(target: bytes) -> bool:
    """Whether a request target is an inference call (any path ending in /infer: what Triton routes there)."""
    return target.split(b"?")[0].endswith(b"/infer")


def request_problem(model: str, outputs: list[tuple[str, set[str]]]) -> Problem | None:
    """Why tritonserver must not see a request to `model` naming `outputs` ((name, parameter keys) each), as
    the error to answer; None when it may."""
    if model != ENSEMBLE:
        return Problem(403, f"model '{model}' is not served on this port: send requests to {ENSEMBLE} (its "
                       "preprocess, encoder and postprocess are steps of it)")
    for name, parameters in outputs:
        if CLASSIFICATION in parameters:
            return Problem(400, f"outputs: {name} asks for the classification extension, which this server does "
                           "not serve (the labels come ranked, with their scores)")
    requested = {name for name, _ in outputs}
    if requested and not set(ANSWER) <= requested:
        return Problem(400, f"outputs: name both {' and '.join(ANSWER)}, or no outputs (got {sorted(requested)}): "
                       "the response cache gives requests with the same inputs one answer, whatever outputs they name")
    return None


def json_problem(target: bytes, json_part: bytes) -> Problem | None:
    """request_problem of a KServe v2 JSON request to `target` (None for a target that is no inference call).
    The JSON part is read as Triton would read it, or refused: one that Python's parser cannot read (or that
    repeats a key, where Triton takes the first and Python the last) could mean another request to Triton than
    the one checked here, and read only within MAX_JSON_CONTAINERS and MAX_JSON_VALUES (a few ms at most
    for 1 MiB; 0.3 ms for a 64 KiB text)."""
    route = INFER_PATH.search(target) if is_infer(target) else None
    if route is None:
        return None
    model = route.group(1).decode("utf-8", "replace")
    unserved = request_problem(model, [])
    if unserved:
        return unserved
    containers, values = json_size(json_part)
    if containers > MAX_JSON_CONTAINERS or values > MAX_JSON_VALUES:
        return Problem(400, f"the request's JSON holds {containers} objects and arrays and {values} values, over "
                       f"the {MAX_JSON_CONTAINERS} and {MAX_JSON_VALUES} this server reads: send large tensors in the "
                       "binary tensor extension")
    try:  # always: a key may be written with escapes ("\\u006futputs"), as Triton reads it too
        request = json.loads(json_part, object_pairs_hook=_unique_keys)
        outputs = request.get("outputs") or [] if isinstance(request, dict) else []
        requested = [(_output_name(output, index), set(output.get("parameters") or {}))
                     for index, output in enumerate(outputs)]
    except (ValueError, AttributeError, TypeError) as exc:
        return Problem(400, f"the request's JSON cannot be read here: {exc}")
    return request_problem(model, requested)


def json_size(document: bytes) -> tuple[int, int]:
    """(objects and arrays, values) outside the strings of a JSON document, counted at C speed."""
    marks = json_outside_strings(document, None, _NOT_JSON_STRUCTURE)
    return marks.count(b"[") + marks.count(b"{"), marks.count(b",") + 1


def _output_name(output, index: int) -> str:
    if not isinstance(output, dict) or not isinstance(output.get("name"), str):
        raise ValueError(f"outputs[{index}] has no name")
    return output["name"]


def protobuf_problem(message: bytes) -> Problem | None:
    """request_problem of a serialized ModelInferRequest; one the walk cannot read (groups, a truncated field)
    is refused rather than passed on unchecked."""
    try:
        model, requested = "", []
        for number, value in _delimited(message):
            if number == MODEL_NAME:
                model = bytes(value).decode("utf-8", "replace")
            elif number == OUTPUTS:
                requested.append(_requested_output(value))
    except ValueError as exc:
        return Problem(400, f"the request is no ModelInferRequest this server can read ({exc})")
    return request_problem(model, requested)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) < len(pairs):  # Triton reads a repeated key's first value, Python its last
        raise ValueError("a key repeats in one object")
    return found


def _requested_output(message: memoryview) -> tuple[str, set[str]]:
    name, parameters = "", set()
    for number, value in _delimited(message):
        if number == OUTPUT_NAME:
            name = bytes(value).decode("utf-8", "replace")
        elif number == OUTPUT_PARAMETERS:
            parameters |= {bytes(key).decode("utf-8", "replace") for entry_number, key in _delimited(value)
                           if entry_number == ENTRY_KEY}
    return name, parameters


def _delimited(message: bytes | memoryview):
    """(field number, value) of a protobuf message's length-delimited fields, in wire order, each a memoryview
    (no copy). A field of another wire type is skipped, as protobuf skips a known field number sent with the
    wrong type (8 bytes of fixed64 would otherwise read as an output). ValueError where the wire format
    breaks, and past MAX_FIELDS fields."""
    view, at, count = memoryview(message), 0, 0
    while at < len(view):
        count += 1
        if count > MAX_FIELDS:
            raise ValueError(f"over {MAX_FIELDS} fields")
        key, at = _varint(view, at)
        wire = key & 7
        if wire == 0:
            _, at = _varint(view, at)
            continue
        if wire not in (1, 2, 5):
            raise ValueError(f"wire type {wire}")
        size = 8 if wire == 1 else 4 if wire == 5 else None
        if size is None:
            size, at = _varint(view, at)
        if at + size > len(view):
            raise ValueError("a field runs past the message's end")
        value, at = view[at:at + size], at + size
        if wire == LENGTH_DELIMITED:
            yield key >> 3, value


def _varint(view: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(view) and shift < 64:
        byte = view[at]
        value, at, shift = value | (byte & 0x7F) << shift, at + 1, shift + 7
        if byte < 0x80:
            return value, at
    raise ValueError("a varint runs past the message's end, or over 64 bits")
