"""`--precision int8` exported and served by a real tritonserver: the answers over gRPC and HTTP equal the
INT8 ONNX model run directly through ONNX Runtime with the same preprocessing and scoring, one request
at a time and with many in flight (merged into dynamic batches, which must not change an answer).
Two models: a tiny random StructBERT (NLI; its gate only reports: random weights cannot pass it) and
the real all-MiniLM-L6-v2 (embedding mode; its gate is enforced and passes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from loadtest.workload import DEFAULT_WORKLOAD, Workload
from tests.answers import DirectRun
from tests.conftest import export_repository, model_statistics, serve_structbert, start_server
from zsc_server.onnx_encoder import OnnxEncoder

ENGLISH = Path(__file__).resolve().parents[2] / "loadtest" / "data" / "workload-en.json"


def direct_int8(repository: Path) -> DirectRun:
    """The exported INT8 ONNX encoder run directly through ONNX Runtime."""
    direct = DirectRun(repository, OnnxEncoder(str(repository / "encoder" / "1" / "model.onnx")))
    assert direct.export_info["precision"] == "int8"
    return direct


def requests_from(workload: Path, count: int) -> list[dict]:
    sampler = Workload.load(workload).sampler("sets", seed=11)
    requests = []
    for number in range(count):
        request = sampler.next()
        kwargs = dict(text=request.text, candidate_labels=list(request.labels))
        if number % 3 == 1:
            kwargs["hypothesis_template"] = "This text is about {}."
        if number % 4 == 2:
            kwargs["multi_label"] = True
        requests.append(kwargs)
    return requests


def assert_same_answer(served, direct_labels, direct_scores, request):
    np.testing.assert_allclose(served.scores, direct_scores, atol=1e-5, err_msg=str(request))
    assert list(served.labels) == list(direct_labels), request


def encoder_batching(server) -> tuple[int, int]:
    stats = model_statistics(server, "encoder")
    return stats["inference_count"], stats["execution_count"]


@pytest.fixture(scope="module")
def int8_nli(tmp_path_factory):
    # a 20 ms batching delay: requests sent together meet in the batcher whatever the timing (over HTTP too)
    served = serve_structbert(tmp_path_factory.mktemp("int8_nli"), "structbert-int8", precision="int8",
                              accuracy_gate="report", gate_requests=24, queue_delay_us=20000)
    yield served, direct_int8(served.repository)
    served.server.stop()


@pytest.fixture(scope="module")
def int8_minilm(tmp_path_factory):
    repository = export_repository("offline-minilm", tmp_path_factory.mktemp("int8_minilm") / "repository",
                                   precision="int8", texts=ENGLISH, gate_requests=48)
    info = json.loads((repository / "encoder" / "export.json").read_text())
    assert info["int8_agreement"]["gate"] == "enforce" and info["int8_agreement"]["passed"] is True
    assert info["label_cache_bytes"] == 0  # INT8: a label's vector depends on its run, so no label cache
    server = start_server("minilm-int8", repository)
    yield server, direct_int8(repository)
    server.stop()


def client_for(server, protocol):
    from zsc_client import ZeroShotClient

    return ZeroShotClient(server.grpc_url if protocol == "grpc" else server.http_url, protocol)


@pytest.mark.parametrize("model", ["int8_nli", "int8_minilm"])
def test_served_int8_answers_equal_the_int8_onnx_run_directly(request, model, protocol):
    server, direct = request.getfixturevalue(model)
    server = getattr(server, "server", server)
    workload = ENGLISH if model == "int8_minilm" else DEFAULT_WORKLOAD
    with client_for(server, protocol) as client:
        for kwargs in requests_from(workload, 12):
            answer = client.classify(**kwargs)
            assert_same_answer(answer, *direct.classify(kwargs["text"], kwargs["candidate_labels"],
                                                        kwargs.get("hypothesis_template"),
                                                        kwargs.get("multi_label", False)), kwargs)


def test_int8_answers_do_not_depend_on_the_dynamic_batch(int8_nli, protocol):
    served, direct = int8_nli
    # texts one token apart: the same sequence bucket, so that the dynamic batcher may merge them (it
    # merges equal shapes only), yet different values in every batch; new to the cache in each run
    labels = ["咨询", "投诉", "建议", "表扬"]
    # whether requests meet in the batcher's 2 ms depends on timing: a few rounds, until one batch formed
    for round_ in range(5):
        base = f"{protocol} {round_} 我的快递三天了还没到，请帮我查一下"
        texts = [base + character for character in "物流这个产品质量太差了要投诉希望增加夜间模式功能建议咨询退款账单"]
        inferences_before, executions_before = encoder_batching(served.server)
        with served.client(protocol) as client:
            answers = client.classify_batch(texts, labels)
        inferences, executions = (after - before for after, before in
                                  zip(encoder_batching(served.server), (inferences_before, executions_before)))
        assert inferences == len(texts) * len(labels)
        for text, answer in zip(texts, answers):
            assert_same_answer(answer, *direct.classify(text, labels), text)
        if executions < len(texts):
            break
    assert executions < len(texts), "no two requests shared a batch: the test would not show what it is for"
