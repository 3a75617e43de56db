"""Safe to expose, at the fronts: requests that killed tritonserver 2.51, cut other callers' answers or reached
the ensemble's steps are refused before tritonserver reads them, through a real launcher (its edge included
where haproxy is installed); docs/limits-failures-security.md#the-fronts-request-size-compression-nesting."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.launched import GOOD, NUMBERS, encoder_inputs, infer_head, private_url, raw_http
from zsc_client import ZeroShotClient

TRIES = 20


def test_the_ensembles_steps_are_not_served_on_the_public_ports_and_warm_up_needs_the_secret(launcher):
    """The preprocess, encoder and postprocess are refused at the fronts (403 / PERMISSION_DENIED); on
    tritonserver's own port, which a local user can reach, the preprocess still refuses the launcher's warm-up
    input without the secret."""
    warm_up = httpclient.InferInput("warm_up", [1], "BYTES")
    warm_up.set_data_from_numpy(np.array([b'[{"labels": "a,b"}]'], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="is not served on this port") as refused:
        httpclient.InferenceServerClient(launcher.http_url).infer("preprocess", [warm_up])
    assert refused.value.status() == "403"
    with grpcclient.InferenceServerClient(launcher.grpc_url) as client:
        with pytest.raises(InferenceServerException, match="is not served on this port") as refused:
            client.infer("encoder", encoder_inputs(5))
    assert refused.value.status() == "StatusCode.PERMISSION_DENIED"
    client = httpclient.InferenceServerClient(private_url(launcher, "http"))
    with pytest.raises(InferenceServerException, match="warm_up: is the launcher's own input") as refused:
        client.infer("preprocess", [warm_up], parameters={"zsc_admin_key": "guess"})
    assert refused.value.status() == "400"


def test_crash_class_bodies_are_refused_or_made_harmless_at_the_front(launcher):
    """What segfaulted tritonserver 2.51, 20 times each: a body nested 50,000 deep (refused by the HTTP
    front), and a request uploaded in 600,000 one-byte chunks (the front forwards it as one body: answered).
    The same tritonserver answers after every one."""
    deep = (b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],"data":' + b"[" * 50_000 + b"]" * 50_000
            + b"}]}")
    request = json.dumps({"inputs": [
        {"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [GOOD["text"]]},
        {"name": "CANDIDATE_LABELS", "datatype": "BYTES", "shape": [3], "data": GOOD["candidate_labels"]},
    ]}).encode()
    chunked = request.ljust(600_000)  # JSON allows the trailing spaces
    server = launcher.server_pid()
    for _ in range(TRIES):
        status, body = raw_http(launcher, infer_head(len(deep)) + deep)
        assert status == 400 and b"max_json_depth" in body
        status, body = raw_http(launcher, infer_head(None),
                                [b"1\r\n%c\r\n" % byte for byte in chunked] + [b"0\r\n\r\n"])
        assert status == 200, body
        [labels] = [output["data"] for output in json.loads(body)["outputs"] if output["name"] == "LABELS"]
        assert sorted(labels) == sorted(GOOD["candidate_labels"])
    assert launcher.server_pid() == server


def test_requests_that_killed_tritonserver_or_cut_others_answers_are_refused_at_the_front(launcher):
    """Each killed tritonserver 2.51 in one request, or poisoned the response cache, before the fronts refused
    them: a deep body behind `Connection: Inference-Header-Content-Length` (the header dropped on the way,
    Triton parsed the body as JSON: SIGSEGV), the classification extension on LABELS over HTTP and gRPC
    (SIGFPE), and a request for LABELS alone (its cached answer went to callers asking for scores too). The
    same tritonserver answers after them, with the scores."""
    deep = (b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],"data":' + b"[" * 50_000 + b"]" * 50_000
            + b"}]}")
    server = launcher.server_pid()
    text = f"{next(NUMBERS)}: {GOOD['text']}"
    inputs = [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [text]},
              {"name": "CANDIDATE_LABELS", "datatype": "BYTES", "shape": [3], "data": GOOD["candidate_labels"]}]
    for _ in range(TRIES):
        status, body = raw_http(launcher, infer_head(len(deep), "Connection: Inference-Header-Content-Length",
                                                     "Inference-Header-Content-Length: 0") + deep)
        assert status == 400 and b"inference-header-content-length" in body.lower()
        for outputs in ([{"name": "LABELS", "parameters": {"classification": 2}}], [{"name": "LABELS"}]):
            request = json.dumps({"inputs": inputs, "outputs": outputs}).encode()
            status, body = raw_http(launcher, infer_head(len(request)) + request)
            assert status == 400 and json.loads(body)["error"].startswith("outputs: "), body
        with grpcclient.InferenceServerClient(launcher.grpc_url) as client:
            tensors = [grpcclient.InferInput(item["name"], [len(item["data"])], "BYTES") for item in inputs]
            for tensor, item in zip(tensors, inputs):
                tensor.set_data_from_numpy(np.array([value.encode() for value in item["data"]], dtype=np.object_))
            with pytest.raises(InferenceServerException, match="classification extension") as refused:
                client.infer("zero_shot", tensors, outputs=[grpcclient.InferRequestedOutput("LABELS", class_count=1)])
            assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    with ZeroShotClient(launcher.grpc_url) as client:
        answer = client.classify(text, GOOD["candidate_labels"])  # the text the refused requests sent
    assert len(answer.scores) == len(GOOD["candidate_labels"])
    assert launcher.server_pid() == server
