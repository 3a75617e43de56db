"""The Hugging Face inference API's zero-shot-classification task, served by the WebUI server, so that
`huggingface_hub.InferenceClient(base_url=...).zero_shot_classification(text, labels)` (and other clients of
the task's current spec) works against Triton unchanged.

The task's shape (huggingface.js packages/tasks/src/tasks/zero-shot-classification/spec): the request is
{"inputs": text, "parameters": {"candidate_labels": [...], "hypothesis_template": ..., "multi_label": ...}},
the answer a list of {"label", "score"}, highest first; an error is {"error": message}. The checks are the
JSON API's (zsc_client.webui.validation), with the fields named as this API names them."""

from __future__ import annotations

from zsc_client.request import ClassificationResult
from zsc_client.webui.validation import ClassifyRequest, RequestError, parse_classify_request

PATH = "/api/hf/zero-shot-classification"
PARAMETERS = ("candidate_labels", "hypothesis_template", "multi_label")
# the JSON API's field -> this API's
FIELD_NAMES = {"text": "inputs", "labels": "parameters.candidate_labels",
               "hypothesis_template": "parameters.hypothesis_template", "multi_label": "parameters.multi_label"}


def parse_hf_request(body: object) -> ClassifyRequest:
    """Check a decoded body; raises RequestError whose message starts with the field, in this API's names."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object: {\"inputs\": text, \"parameters\": {...}}")
    # options (wait_for_model, use_cache) steer Hugging Face's hosted service, not the task: nothing to do here
    unknown = sorted(set(body) - {"inputs", "parameters", "options"})
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r}; the fields are inputs, parameters, options", unknown[0])
    if not isinstance(body.get("options", {}), dict):
        raise RequestError("options must be an object", "options")
    parameters = body.get("parameters")
    if parameters is None:
        raise RequestError("parameters.candidate_labels is required", "parameters.candidate_labels")
    if not isinstance(parameters, dict):
        raise RequestError("parameters must be an object", "parameters")
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise RequestError(f"unknown parameter {unknown[0]!r}; the parameters are {', '.join(PARAMETERS)}",
                           f"parameters.{unknown[0]}")
    try:
        return parse_classify_request({
            "text": body.get("inputs"), "labels": parameters.get("candidate_labels"),
            "hypothesis_template": parameters.get("hypothesis_template"),
            "multi_label": parameters.get("multi_label"),
        })
    except RequestError as exc:
        raise hf_error(exc) from None


def hf_error(exc: RequestError) -> RequestError:
    """A refusal of the JSON API's checks (or Triton's) with the field in this API's names, in front of the
    message; one already in this API's names as it is."""
    if exc.field not in FIELD_NAMES:
        return exc
    field = FIELD_NAMES[exc.field]
    return RequestError(f"{field}: {exc.message}", field, exc.status)


def hf_response(result: ClassificationResult) -> list[dict]:
    return [{"label": label, "score": score} for label, score in zip(result.labels, result.scores)]
