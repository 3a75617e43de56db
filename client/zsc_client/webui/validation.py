"""The JSON API's request checks and response shape, kept apart from aiohttp so they are unit-testable.

Checks here are the ones whose answer does not depend on the served model (types, empty text, no labels,
a template without ``{}``). Limits set at export (labels per request, text size) stay with Triton: its
refusal comes back as a 400 naming the field, through ``field_of_server_message``."""

from __future__ import annotations

import dataclasses
import re

from zsc_client.errors import InvalidInputError
from zsc_client.request import INPUTS, ClassificationResult, labels_as_given

FIELDS = ("text", "labels", "hypothesis_template", "multi_label")
# Triton's tensor names, as the preprocess model prefixes its messages with them, -> this API's fields
SERVER_FIELDS = dict(zip(INPUTS, FIELDS))
_SERVER_FIELD = re.compile(r"\b(" + "|".join(SERVER_FIELDS) + r")\b")
# Triton's routing prefix, then the tensor the message is about: the API names the field on its own
_SERVER_PREFIX = re.compile(r"^(in ensemble '[^']*', )?((" + "|".join(SERVER_FIELDS) + r"): )?")


class RequestError(ValueError):
    """A request this API refuses; ``field`` names the offending field (None for the body itself)."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def to_dict(self) -> dict:
        return {"error": self.message, "field": self.field}


@dataclasses.dataclass(frozen=True)
class ClassifyRequest:
    text: str
    labels: list[str]
    hypothesis_template: str | None = None  # None: the server's default
    multi_label: bool = False


def split_labels(value: str) -> list[str]:
    """'咨询, 投诉，建议' -> ['咨询', '投诉', '建议']: split on ',' and '，', stripped, empties dropped."""
    return [part.strip() for part in value.replace("，", ",").split(",") if part.strip()]


def parse_classify_request(body: object) -> ClassifyRequest:
    """Check a decoded JSON body; raises ``RequestError`` naming the first bad field."""
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {_json_type(body)}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; the fields are {', '.join(FIELDS)}", unknown[0])

    text = body.get("text")
    if not isinstance(text, str):
        raise RequestError(f"must be a string, got {_json_type(text)}", "text")
    _check_unicode(text, "text")
    if not text.strip():
        raise RequestError("is empty: enter the text to classify", "text")

    labels = _labels(body.get("labels"))

    template = body.get("hypothesis_template")
    if template is not None and not isinstance(template, str):
        raise RequestError(f"must be a string or null, got {_json_type(template)}", "hypothesis_template")
    if template is not None:
        _check_unicode(template, "hypothesis_template")
    # a cleared form field means "the server's default", not "a template without {}"
    template = template if template and template.strip() else None
    if template is not None and "{}" not in template:
        raise RequestError(f"must contain {{}} where the label goes, e.g. '这是一条{{}}。'; got {template!r}",
                           "hypothesis_template")

    multi_label = body.get("multi_label", False)
    if multi_label is None:
        multi_label = False
    if not isinstance(multi_label, bool):
        raise RequestError(f"must be true or false, got {_json_type(multi_label)}", "multi_label")
    return ClassifyRequest(text, labels, template, multi_label)


def _labels(value: object) -> list[str]:
    if isinstance(value, str):
        _check_unicode(value, "labels")
        labels = split_labels(value)
    elif isinstance(value, list):
        for i, label in enumerate(value):
            if not isinstance(label, str):
                raise RequestError(f"label {i} must be a string, got {_json_type(label)}", "labels")
            _check_unicode(label, "labels", f"label {i} ")
            if not label.strip():
                raise RequestError(f"label {i} is empty", "labels")
        try:
            labels = [label.strip() for label in labels_as_given(value)]
        except InvalidInputError as exc:
            raise RequestError(exc.message, "labels") from None
    elif value is None:
        labels = []
    else:
        raise RequestError(f"must be a string ('咨询,投诉，建议') or a list of strings, got {_json_type(value)}",
                           "labels")
    if not labels:
        raise RequestError("no candidate labels: enter at least one, separated by ',' or '，'", "labels")
    return labels


def clean_server_message(message: str) -> str:
    """Triton's message without its routing prefix ("in ensemble 'zero_shot', ") and the tensor name in front
    ("TEXT: "): what is wrong, for an answer that names the field in its own words."""
    return _SERVER_PREFIX.sub("", message, count=1)


def field_of_server_message(message: str) -> str | None:
    """The API field a Triton error message is about (its first tensor name), if any."""
    match = _SERVER_FIELD.search(message)
    return SERVER_FIELDS[match.group(1)] if match else None


def classify_response(request: ClassifyRequest, result: ClassificationResult) -> dict:
    """The 200 body: labels and scores as Triton ranked them (highest first), the WebUI server's round trip
    to Triton and the time inside Triton."""
    return {
        "text": result.text,
        "labels": result.labels,
        "scores": result.scores,
        "multi_label": request.multi_label,
        "hypothesis_template": request.hypothesis_template,
        "triton_round_trip_ms": round(result.latency_ms, 3),  # the WebUI server's wait for Triton
        # inside Triton; none for an answer from Triton's response cache, which carries another request's time
        "inside_triton_ms": None if result.server_latency_ms is None or result.from_cache
        else round(result.server_latency_ms, 3),
        "from_cache": result.from_cache,
    }


def _check_unicode(value: str, field: str, which: str = "") -> None:
    """JSON's \\ud800 escapes decode to lone surrogates, which no UTF-8 request to Triton can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(f"{which}is not valid Unicode: a lone surrogate {value[exc.start]!r} at character "
                           f"{exc.start}", field) from None


def _json_type(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)
