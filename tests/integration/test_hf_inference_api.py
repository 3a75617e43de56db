"""Hugging Face's own client against us: `huggingface_hub.InferenceClient.zero_shot_classification`, pointed
at the WebUI server's Hugging Face-shaped endpoint (`zsc webui`, a real process) in front of the real local
Triton, gets the same labels and scores as zsc_client, and refusals in that API's shape."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from zsc_client.webui.hf_api import PATH
from zsc_server.triton_process import free_ports

TEXT = "我的快递三天了还没到，请帮我查一下物流。"
LABELS = ["咨询", "投诉", "建议"]


@pytest.fixture(scope="module")
def hf_url(structbert):
    [port] = free_ports(1)
    process = subprocess.Popen([str(Path(sys.executable).parent / "zsc"), "webui", "--triton",
                                structbert.server.grpc_url, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as response:
                    if response.status == 200:
                        break
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}{PATH}"
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize(("template", "multi_label"), [(None, False), ("这是一条{}。", True)])
def test_huggingface_hubs_client_gets_the_same_answer_as_ours(structbert, hf_url, template, multi_label):
    from huggingface_hub import InferenceClient

    answer = InferenceClient(base_url=hf_url).zero_shot_classification(
        TEXT, LABELS, multi_label=multi_label, hypothesis_template=template)
    with structbert.client("grpc") as client:
        expected = client.classify(TEXT, LABELS, hypothesis_template=template, multi_label=multi_label)
    assert [element.label for element in answer] == expected.labels
    assert [element.score for element in answer] == pytest.approx(expected.scores, abs=1e-6)


def test_a_refusal_comes_back_in_that_apis_shape(hf_url):
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as refused:
        InferenceClient(base_url=hf_url).zero_shot_classification("   ", LABELS)
    assert refused.value.response.status_code == 400
    assert refused.value.response.json() == {"error": "inputs: is empty: enter the text to classify"}
