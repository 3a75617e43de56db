"""`--runtime python-ov` exported and served by a real tritonserver: FP32 answers equal the reference pipeline's;
static INT8 (NNCF) passes the accuracy gate on the real all-MiniLM-L6-v2, keeps the label cache, and answers
every request of a dynamic batch exactly as the INT8 IR run alone on it (batch-invariant, unlike ONNX
Runtime's dynamic INT8)."""

from __future__ import annotations

import concurrent.futures
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.answers import DirectRun, assert_matches
from tests.conftest import export_repository, model_statistics, serve_structbert, start_server
from zsc_client import ZeroShotClient
from zsc_server.ov_encoder import OvEncoder

ENGLISH = Path(__file__).resolve().parents[2] / "loadtest" / "data" / "workload-en.json"
LABELS = ["delivery", "billing", "praise", "a software bug"]


@pytest.fixture(scope="module")
def ov_structbert(tmp_path_factory):
    served = serve_structbert(tmp_path_factory.mktemp("ov_structbert"), "structbert-ov", runtime="python-ov")
    yield served
    served.server.stop()


@pytest.fixture(scope="module")
def ov_int8_minilm(tmp_path_factory):
    # a 20 ms batching delay: requests sent together meet in the batcher whatever the timing
    repository = export_repository("offline-minilm", tmp_path_factory.mktemp("ov_int8") / "repository",
                                   runtime="python-ov", precision="int8", texts=ENGLISH, gate_requests=48,
                                   queue_delay_us=20000)
    server = start_server("minilm-ov-int8", repository)
    yield server, repository
    server.stop()


@pytest.mark.parametrize("case", [
    dict(text="这个产品质量太差了，我要投诉！", candidate_labels=["咨询", "投诉", "建议"]),
    dict(text="我的快递三天了还没到，请帮我查一下物流。", candidate_labels=["物流", "退款", "表扬"], multi_label=True),
    dict(text="the app crashes every time i open settings", candidate_labels=["bug report", "praise"],
         hypothesis_template="this text is about {}."),
])
def test_fp32_answers_equal_the_reference_pipeline(ov_structbert, protocol, case):
    with ov_structbert.client(protocol) as client:
        result = client.classify(**case)
    assert_matches(result, *ov_structbert.reference(**case))
    config = (ov_structbert.repository / "encoder" / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and (ov_structbert.repository / "encoder" / "1" / "model.bin").is_file()


def test_int8_passes_the_gate_and_keeps_the_label_cache(ov_int8_minilm):
    _, repository = ov_int8_minilm
    info = json.loads((repository / "encoder" / "export.json").read_text())
    assert info["runtime"] == "python-ov" and info["precision"] == "int8"
    assert info["int8_agreement"]["gate"] == "enforce" and info["int8_agreement"]["passed"] is True
    assert info["label_cache_bytes"] > 0  # static scales: a cached label vector is the one a batch computes
    config = (repository / "encoder" / "config.pbtxt").read_text()
    assert re.search(r'key: "one_run_per_request"\s*value \{\s*string_value: "false"', config), config


def test_int8_answers_do_not_depend_on_the_dynamic_batch(ov_int8_minilm):
    server, repository = ov_int8_minilm
    direct = DirectRun(repository, OvEncoder(str(repository / "encoder" / "1" / "model.xml")))
    texts = [f"Order {number}: my parcel is three days late, where is it?" for number in range(24)]
    before = model_statistics(server, "encoder")

    def classify(text):
        with ZeroShotClient(server.grpc_url) as client:
            return client.classify(text, LABELS)

    with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
        answers = list(pool.map(classify, texts))
    after = model_statistics(server, "encoder")
    executions = after["execution_count"] - before["execution_count"]
    # executions against requests, not against inference_count: that counts encoder rows, the label cache's
    # own calls included, and exceeds the executions even when every request ran alone
    assert executions < len(texts), "no two requests shared a batch: the test would not show what it is for"
    for text, answer in zip(texts, answers):
        labels, scores = direct.classify(text, LABELS)
        assert list(answer.labels) == list(labels), text
        np.testing.assert_allclose(answer.scores, scores, atol=1e-6, err_msg=text)


def test_the_native_openvino_backend_gets_the_same_ir_and_a_config_that_matches_it(tmp_path):
    """--runtime openvino writes the IR for the openvino backend of NGC's tritonserver images. The pytriton
    tritonserver here has no such backend, so the config is checked statically: parsed as Triton parses it,
    against the inputs and outputs of the IR it ships with, which runs on the preprocess's own batches."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from export.compose_env import stack_for
    from export.random_checkpoint import write_modelscope_structbert
    from zsc_server.preprocess import Preprocessor
    from zsc_server.settings import ScoringSettings

    checkpoint = write_modelscope_structbert(tmp_path / "checkpoint")
    repository = export_repository(str(checkpoint), tmp_path / "repository", runtime="openvino", precision="int8",
                                   accuracy_gate="report", gate_requests=16, max_length=64, cpu_cores=4)
    version = repository / "encoder" / "1"
    assert sorted(path.name for path in version.iterdir()) == ["model.bin", "model.xml"]  # no Python model
    config = text_format.Parse((repository / "encoder" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert config.backend == "openvino" and not config.platform
    assert [(group.kind, group.count) for group in config.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_CPU, 1)]
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters["NUM_STREAMS"] == "1" and parameters["PERFORMANCE_HINT"] == "LATENCY"
    assert parameters["INFERENCE_NUM_THREADS"] == "4"  # --cpu-cores 4, one instance
    assert config.HasField("dynamic_batching") and config.max_batch_size >= 257  # max_labels + 1
    assert not any(tensor.allow_ragged_batch for tensor in config.input)  # native batches are equal shapes

    encoder = OvEncoder(str(version / "model.xml"))
    assert [tensor.name for tensor in config.input] == list(encoder.input_names)
    assert all(tensor.data_type == model_config_pb2.TYPE_INT64 and list(tensor.dims) == [-1]
               for tensor in config.input)
    [output] = config.output
    assert [output.name] == encoder.output_names
    preprocess = text_format.Parse((repository / "preprocess" / "config.pbtxt").read_text(),
                                   model_config_pb2.ModelConfig())
    scoring = ScoringSettings.from_model_config(
        {"parameters": {key: {"string_value": value.string_value} for key, value in preprocess.parameters.items()}})
    batch = Preprocessor(scoring, repository / "preprocess" / "1" / "tokenizer.json").prepare(
        "我的快递三天了还没到".encode(), ["物流".encode(), "投诉".encode(), "表扬".encode()]).encoded
    [answer] = encoder.run_batch([batch.as_dict(tuple(encoder.input_names))])
    assert answer[output.name].shape[0] == 3 and np.isfinite(answer[output.name]).all()
    assert stack_for(repository)[0] == "gpu"  # the NGC image's stack: the pytriton wheel has no openvino backend
