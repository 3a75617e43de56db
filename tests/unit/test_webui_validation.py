"""The WebUI's request checks and response shape (zsc_client.webui.validation), without a server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from zsc_client.request import ClassificationResult
from zsc_client.webui.validation import (
    ClassifyRequest,
    RequestError,
    classify_response,
    clean_server_message,
    field_of_server_message,
    parse_classify_request,
    split_labels,
)


def test_labels_split_on_both_commas():
    assert split_labels("咨询, 投诉，建议 ,") == ["咨询", "投诉", "建议"]
    assert split_labels(" ，, ") == []


def test_a_full_request():
    request = parse_classify_request(
        {"text": "我要投诉", "labels": ["咨询 ", "投诉"], "hypothesis_template": "这是一条{}", "multi_label": True})
    assert request == ClassifyRequest("我要投诉", ["咨询", "投诉"], "这是一条{}", True)


def test_defaults_and_a_cleared_template():
    request = parse_classify_request({"text": "你好", "labels": "咨询,投诉", "hypothesis_template": "  "})
    assert request == ClassifyRequest("你好", ["咨询", "投诉"], None, False)
    assert parse_classify_request({"text": "你好", "labels": "a", "multi_label": None}).multi_label is False


BAD = {
    "not an object": ([{"text": "x"}], None, "must be a JSON object, got an array"),
    "unknown field": ({"text": "x", "labels": "a", "label": "b"}, "label", "unknown field 'label'"),
    "no text": ({"labels": "a"}, "text", "must be a string, got null"),
    "text is a number": ({"text": 3, "labels": "a"}, "text", "must be a string, got a number"),
    "blank text": ({"text": " \n", "labels": "a"}, "text", "is empty"),
    "no labels": ({"text": "x"}, "labels", "no candidate labels"),
    "commas only": ({"text": "x", "labels": " ,， "}, "labels", "no candidate labels"),
    "empty list": ({"text": "x", "labels": []}, "labels", "no candidate labels"),
    "empty label in a list": ({"text": "x", "labels": ["a", " "]}, "labels", "label 1 is empty"),
    "label not a string": ({"text": "x", "labels": ["a", 1]}, "labels", "label 1 must be a string, got a number"),
    "labels an object": ({"text": "x", "labels": {"a": 1}}, "labels", "or a list of strings, got an object"),
    "template without {}": ({"text": "x", "labels": "a", "hypothesis_template": "这是一条"},
                            "hypothesis_template", "must contain {}"),
    "template not a string": ({"text": "x", "labels": "a", "hypothesis_template": ["{}"]},
                              "hypothesis_template", "must be a string or null"),
    "multi_label as a string": ({"text": "x", "labels": "a", "multi_label": "true"}, "multi_label",
                                "must be true or false, got a string"),
    "multi_label as 1": ({"text": "x", "labels": "a", "multi_label": 1}, "multi_label", "got a number"),
    "lone surrogate in the text": ({"text": "a\ud800", "labels": "a"}, "text",
                                   "lone surrogate '\\ud800' at character 1"),
    "lone surrogate in a label string": ({"text": "x", "labels": "a,\udfff"}, "labels", "is not valid Unicode"),
    "lone surrogate in a listed label": ({"text": "x", "labels": ["a", "\udfff"]}, "labels",
                                         "label 1 is not valid Unicode"),
    "lone surrogate in the template": ({"text": "x", "labels": "a", "hypothesis_template": "{}\ud800"},
                                       "hypothesis_template", "is not valid Unicode"),
    "one listed label holding a comma": ({"text": "x", "labels": ["New York, USA"]}, "labels",
                                         "give each label as its own list item"),
    "one listed label holding a Chinese comma": ({"text": "x", "labels": ["咨询，投诉"]}, "labels", "contains"),
}


def test_several_listed_labels_keep_their_commas():
    """Several elements are the labels as given (the ensemble splits only a single one)."""
    assert parse_classify_request({"text": "x", "labels": ["New York, USA", "Paris"]}).labels == [
        "New York, USA", "Paris"]
    assert parse_classify_request({"text": "x", "labels": ["Paris "]}).labels == ["Paris"]


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_requests_name_the_field(case):
    body, field, message = BAD[case]
    with pytest.raises(RequestError) as raised:
        parse_classify_request(body)
    assert raised.value.field == field
    assert message in raised.value.message
    assert raised.value.status == 400
    assert raised.value.to_dict() == {"error": raised.value.message, "field": field}


def test_server_messages_map_to_fields():
    assert field_of_server_message("in ensemble 'zero_shot', TEXT: is 1050000 bytes; the limit is 65536") == "text"
    assert field_of_server_message("CANDIDATE_LABELS: has 300 labels; the limit is 256") == "labels"
    assert field_of_server_message("HYPOTHESIS_TEMPLATE: the hypothesis for label 0 ...") == "hypothesis_template"
    assert field_of_server_message("unexpected datatype TYPE_INT32 for input 'MULTI_LABEL'") == "multi_label"
    assert field_of_server_message("something else went wrong (CONTEXT_TEXT)") is None


def test_server_messages_lose_the_ensemble_prefix_and_the_tensor_name():
    """The API names the field itself (`field`, or the Hugging Face API's name in front)."""
    message = "in ensemble 'zero_shot', CANDIDATE_LABELS: has 65 labels; the limit is 64 (max_labels)"
    assert clean_server_message(message) == "has 65 labels; the limit is 64 (max_labels)"
    assert clean_server_message("TEXT: is empty") == "is empty"
    # a tensor named inside the message is what the message says
    assert clean_server_message("unexpected datatype TYPE_INT32 for input 'MULTI_LABEL'") == (
        "unexpected datatype TYPE_INT32 for input 'MULTI_LABEL'")


def test_response_shape():
    request = ClassifyRequest("你好", ["咨询", "投诉"], None, True)
    result = ClassificationResult("你好", ["投诉", "咨询"], [0.7, 0.2], latency_ms=12.34567,
                                  server_latency_ms=9.87654)
    assert classify_response(request, result) == {
        "text": "你好", "labels": ["投诉", "咨询"], "scores": [0.7, 0.2], "multi_label": True,
        "hypothesis_template": None, "triton_round_trip_ms": 12.346, "inside_triton_ms": 9.877, "from_cache": False,
    }
    result.server_latency_ms = None
    assert classify_response(request, result)["inside_triton_ms"] is None


def test_an_answer_from_the_response_cache_is_marked_and_shows_no_old_server_time():
    """A cached answer carries the server time of the request that filled the cache (71 ms), longer than
    this request's whole round trip (1 ms): never shown as this request's."""
    from zsc_client.cli import latency_line

    result = ClassificationResult("t", ["a"], [1.0], latency_ms=1.0, server_latency_ms=71.4)
    assert result.from_cache and result.to_dict()["from_cache"]
    assert latency_line(result) == "round trip 1.0 ms (answered from Triton's response cache)"
    body = classify_response(ClassifyRequest("t", ["a"]), result)
    assert body["from_cache"] is True and body["inside_triton_ms"] is None
    fresh = ClassificationResult("t", ["a"], [1.0], latency_ms=12.0, server_latency_ms=9.5)
    assert not fresh.from_cache and latency_line(fresh) == "round trip 12.0 ms, inside Triton 9.5 ms"


def test_core_client_and_cli_import_without_aiohttp():
    """aiohttp is the webui extra's: without it the client works and `zsc webui` says what to install."""
    code = ("import sys; sys.modules['aiohttp'] = None\n"
            "import zsc_client, zsc_client.cli, zsc_client.webui.validation\n"
            "raise SystemExit(zsc_client.cli.main(['webui']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == ("zsc: error: the WebUI needs aiohttp: pip install 'zsc-client[webui]' "
                                   "(or: pip install aiohttp)")


@pytest.mark.parametrize(("body", "message"), [
    ([], "the body must be a JSON object"),
    ({"inputs": "t"}, "parameters.candidate_labels is required"),
    ({"inputs": "t", "parameters": []}, "parameters must be an object"),
    ({"inputs": "t", "parameters": {"candidate_labels": ["a"], "top_k": 1}}, "unknown parameter 'top_k'"),
    ({"inputs": "t", "parameters": {"candidate_labels": ["a"]}, "model": "x"}, "unknown field 'model'"),
    ({"inputs": "t", "parameters": {"candidate_labels": ["a"]}, "options": True}, "options must be an object"),
    ({"inputs": "t", "parameters": {"candidate_labels": ["New York, USA"]}},
     "parameters.candidate_labels: label 0 'New York, USA' contains"),
    ({"inputs": ["t"], "parameters": {"candidate_labels": ["a"]}}, "inputs: must be a string"),
    ({"inputs": "t", "parameters": {"candidate_labels": []}}, "parameters.candidate_labels: no candidate labels"),
    ({"inputs": "t", "parameters": {"candidate_labels": ["a"], "hypothesis_template": "no slot"}},
     "parameters.hypothesis_template: must contain {}"),
])
def test_the_hugging_face_shaped_api_names_its_own_fields(body, message):
    from zsc_client.webui.hf_api import parse_hf_request

    with pytest.raises(RequestError) as refused:
        parse_hf_request(body)
    assert refused.value.message.startswith(message) or message in refused.value.message


def test_the_hugging_face_shaped_api_maps_to_a_classify_request_and_back():
    from zsc_client.webui.hf_api import hf_response, parse_hf_request

    request = parse_hf_request({"inputs": "t", "parameters": {"candidate_labels": ["a", "b"],
                                                              "hypothesis_template": None, "multi_label": True},
                                "options": {"wait_for_model": True}})  # the hosted service's own options
    assert (request.text, request.labels, request.hypothesis_template, request.multi_label) == ("t", ["a", "b"],
                                                                                               None, True)
    result = ClassificationResult(text="t", labels=["b", "a"], scores=[0.75, 0.25], latency_ms=1.0)
    assert hf_response(result) == [{"label": "b", "score": 0.75}, {"label": "a", "score": 0.25}]
