"""The ensemble's tensor names: declared once for the server (zsc_server/tensor_names.py), written by the export,
and the client's own copy (it installs without the server) the same."""

from __future__ import annotations

from export.repository import INTERNAL, REQUEST_INPUTS, RESPONSE_OUTPUTS, WARM_UP_INPUT, WARM_UP_OUTPUT
from zsc_client import request
from zsc_client.webui.validation import SERVER_FIELDS
from zsc_server import tensor_names as names


def test_the_export_declares_the_tensors_by_these_names():
    assert [t["name"] for t in REQUEST_INPUTS] == [names.TEXT, names.CANDIDATE_LABELS, names.HYPOTHESIS_TEMPLATE,
                                                   names.MULTI_LABEL]
    assert [t["name"] for t in RESPONSE_OUTPUTS] == [names.LABELS, names.SCORES, names.SERVER_LATENCY_MS]
    assert [t["name"] for t in INTERNAL] == [names.PREPARED_LABELS, names.PREPARED_MULTI_LABEL, names.START_NS,
                                             names.LABEL_EMBEDDINGS]
    assert (WARM_UP_INPUT["name"], WARM_UP_OUTPUT["name"]) == (names.WARM_UP, names.WARM_UP_REPORT)


def test_the_client_sends_and_reads_the_same_names():
    assert request.INPUTS == (names.TEXT, names.CANDIDATE_LABELS, names.HYPOTHESIS_TEMPLATE, names.MULTI_LABEL)
    assert request.OUTPUTS == (names.LABELS, names.SCORES, names.SERVER_LATENCY_MS)
    # the WebUI maps the server's field names to its form's
    assert SERVER_FIELDS == {names.TEXT: "text", names.CANDIDATE_LABELS: "labels",
                             names.HYPOTHESIS_TEMPLATE: "hypothesis_template", names.MULTI_LABEL: "multi_label"}
