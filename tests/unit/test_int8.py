"""INT8 for the CPU runtimes without a server: the accuracy gate (pass and fail), its requests, the
quantized graph, one run per request, thread settings, configs, and the export CLI's refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export import agreement
from export.agreement import AccuracyGateError, GateThresholds, compare_answers, enforce
from export.checkpoint import load_checkpoint
from export.errors import ExportError
from export.onnx2int8 import quantize_encoder
from export.random_checkpoint import write_modelscope_structbert
from export.repository import Runtime, ServingSettings, encoder_config, to_pbtxt
from export.torch2onnx import Precision, export_onnx
from zsc_server.onnx_encoder import OnnxEncoder, intra_op_threads
from zsc_server.settings import ScoringSettings

FP32 = [{"咨询": 0.70, "投诉": 0.20, "建议": 0.10}, {"a": 0.55, "b": 0.45}, {"x": 0.9, "y": 0.05, "z": 0.05}]


def shifted(answers, **changes):
    """`answers` with scores moved: changes maps 'request_label' -> delta."""
    moved = [dict(answer) for answer in answers]
    for key, delta in changes.items():
        index, label = key.split("_")
        moved[int(index)][label] += delta
    return moved


def test_gate_passes_answers_within_the_limits():
    int8 = shifted(FP32, **{"0_咨询": -0.03, "1_b": 0.05})
    report = compare_answers(FP32, int8)
    assert report.requests == 3 and report.scores == 8
    assert report.max_abs_delta == pytest.approx(0.05)
    assert report.mean_abs_delta == pytest.approx(0.08 / 8)
    assert report.top1_agreement == report.top1_strict == 1.0
    assert report.failures() == []
    enforce(report)  # does not raise


@pytest.mark.parametrize(("changes", "failed"), [
    ({"2_y": 0.11}, "max |Δ score| 0.1100 > 0.1"),  # one score far off, top label unchanged
    ({"0_咨询": -0.09, "0_投诉": 0.05, "0_建议": 0.09, "2_x": -0.09, "2_y": 0.09, "2_z": 0.09}, "mean |Δ score|"),
    ({"1_a": -0.06, "1_b": 0.06}, "top-1 agreement 66.7% < 95%"),  # a decided answer flips
])
def test_gate_fails_above_each_limit_and_says_which(changes, failed):
    report = compare_answers(FP32, shifted(FP32, **changes))
    assert len(report.failures()) >= 1 and any(failed in line for line in report.failures()), report.failures()
    with pytest.raises(AccuracyGateError, match="INT8 accuracy gate failed") as caught:
        enforce(report)
    assert failed in str(caught.value) and "--validate-only --texts" in str(caught.value)


def test_near_ties_in_fp32_do_not_count_as_disagreement():
    fp32 = [{"a": 0.50, "b": 0.49, "c": 0.01}, {"a": 0.60, "b": 0.30, "c": 0.10}]
    int8 = [{"a": 0.49, "b": 0.50, "c": 0.01}, {"a": 0.30, "b": 0.60, "c": 0.10}]
    report = compare_answers(fp32, int8, GateThresholds(max_abs_delta=1, mean_abs_delta=1))
    assert report.top1_strict == 0.0
    assert report.top1_agreement == 0.5  # the near-tie agrees, the decided flip does not
    assert report.failures() == ["top-1 agreement 50.0% < 95%"]


def test_gate_refuses_mismatched_answers():
    with pytest.raises(ValueError, match="different labels"):
        compare_answers([{"a": 1.0}], [{"b": 1.0}])
    with pytest.raises(ValueError, match="same, non-zero number"):
        compare_answers(FP32, FP32[:2])


def test_gate_requests_are_a_fixed_sample_covering_sets_and_templates():
    texts, label_sets = agreement.read_texts_and_label_sets(None, None)
    requests = agreement.gate_requests(texts, label_sets, agreement.TEMPLATES, 192)
    assert requests == agreement.gate_requests(texts, label_sets, agreement.TEMPLATES, 192)
    assert len(requests) == 192 and len(set(requests)) == 192
    assert {r.template for r in requests} == set(agreement.TEMPLATES)
    assert {r.labels for r in requests} == {tuple(s) for s in label_sets}
    assert len({r.text for r in requests}) > 40
    assert len(agreement.gate_requests(texts[:2], label_sets[:3], ("{}",), 192)) == 6  # all there are


def test_users_texts_and_labels(tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_text("my parcel is late\n\n  the app crashes  \n", encoding="utf-8")
    texts, label_sets = agreement.read_texts_and_label_sets(lines, ["delivery, bug，praise", "yes,no,yes"])
    assert texts == ["my parcel is late", "the app crashes"]
    assert label_sets == [["delivery", "bug", "praise"], ["yes", "no"]]
    workload = tmp_path / "mine.json"
    workload.write_text(json.dumps({"texts": ["t1"], "label_sets": [["a", "b"]]}), encoding="utf-8")
    assert agreement.read_texts_and_label_sets(workload, None) == (["t1"], [["a", "b"]])
    _, default_sets = agreement.read_texts_and_label_sets(lines, None)
    assert default_sets == json.loads(agreement.WORKLOAD.read_text(encoding="utf-8"))["label_sets"]
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    (tmp_path / "bad.json").write_text('{"label_sets": []}', encoding="utf-8")
    for path, message in ((tmp_path / "empty.txt", "no texts"), (tmp_path / "bad.json", "'texts'"),
                          (tmp_path / "missing.txt", "cannot read")):
        with pytest.raises(ExportError, match=message):
            agreement.read_texts_and_label_sets(path, None)
    with pytest.raises(ExportError, match="--labels"):
        agreement.read_texts_and_label_sets(lines, [" , "])


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A tiny random NLI encoder: its FP32 ONNX and the INT8 quantization of it."""
    root = tmp_path_factory.mktemp("int8")
    ckpt = load_checkpoint(str(write_modelscope_structbert(root / "ms")))
    fp32 = export_onnx(ckpt.module, "logits", root / "fp32.onnx", Precision.INT8)
    summary = quantize_encoder(fp32, root / "int8.onnx")
    return fp32, root / "int8.onnx", summary


def test_quantized_graph_keeps_head_and_attention_products_in_fp32(tiny_onnx):
    import onnx

    fp32, int8, summary = tiny_onnx
    graph = onnx.load(str(int8)).graph
    ops = [node.op_type for node in graph.node]
    # 2 layers x (query, key, value, attention output, feed-forward in, feed-forward out)
    assert summary.int8_matmuls == ops.count("MatMulInteger") == 12
    assert summary.fp32_head == ("/model/bert/pooler/dense/Gemm", "/model/classifier/Gemm")
    # two attention products per layer, and the head (quantize_dynamic rewrites its Gemms as MatMul + Add)
    assert summary.fp32_matmuls == ops.count("MatMul") == 4 + 2
    head = [node for node in graph.node if node.name in {f"{name}_MatMul" for name in summary.fp32_head}]
    assert [node.op_type for node in head] == ["MatMul", "MatMul"]
    int8_weights = {init.name for init in graph.initializer
                    if init.data_type == onnx.TensorProto.INT8 and init.name.endswith("_quantized")}
    assert len(int8_weights) == 12
    assert not {name for node in head for name in node.input} & int8_weights
    assert "classifier" in str(summary) and "per-channel" in str(summary)


def feeds(rows_and_lengths, seed=1):
    rng = np.random.default_rng(seed)
    result = []
    for rows, length in rows_and_lengths:
        ids = rng.integers(5, 100, size=(rows, length))
        mask = np.ones_like(ids)
        mask[0, length // 2:] = 0  # padding inside the request, as the preprocess writes it
        result.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    return result


def test_int8_runs_each_request_alone_so_batching_cannot_change_answers(tiny_onnx):
    _, int8, _ = tiny_onnx
    requests = feeds([(3, 16), (1, 32), (5, 16)])
    separate = OnnxEncoder(str(int8), 1, one_run_per_request=True, rows_per_call=2)
    assert separate.rows_per_call == 0  # dynamic INT8 scales a request's rows together: one call each
    alone = [separate.run_batch([feed])[0]["logits"] for feed in requests]
    batched = [result["logits"] for result in separate.run_batch(requests)]
    for one, other in zip(alone, batched):
        np.testing.assert_array_equal(one, other)
    # why: merged into one run, the per-run activation scale changes another request's logits
    merged = OnnxEncoder(str(int8), 1).run_batch(requests)
    assert any(not np.array_equal(one, result["logits"]) for one, result in zip(alone, merged))


@pytest.mark.parametrize(("requested", "instances", "cores", "threads"), [
    (0, 1, 2, 2), (0, 2, 2, 1), (0, 3, 2, 1), (0, 2, 16, 8), (4, 2, 2, 4),
])
def test_threads_share_the_cores_among_instances(requested, instances, cores, threads):
    assert intra_op_threads(requested, instances, cores) == threads


def parse(config: dict) -> model_config_pb2.ModelConfig:
    return text_format.Parse(to_pbtxt(config), model_config_pb2.ModelConfig())


def test_int8_encoder_configs():
    scoring = ScoringSettings(max_labels=100)
    python_ort = parse(encoder_config(scoring, ServingSettings(Runtime.PYTHON_ORT, precision="int8"), "logits", 3))
    assert python_ort.parameters["one_run_per_request"].string_value == "true"
    assert python_ort.parameters["intra_op_threads"].string_value == "0"
    assert "cores" in python_ort.parameters["intra_op_threads_rule"].string_value
    assert python_ort.dynamic_batching.default_queue_policy.default_timeout_microseconds > 0  # still bounded
    fp32 = parse(encoder_config(scoring, ServingSettings(Runtime.PYTHON_ORT), "logits", 3))
    assert fp32.parameters["one_run_per_request"].string_value == "false"
    # many labels run in calls of at most 64 rows; the encoder keeps an INT8 request's rows in one call
    assert fp32.parameters["rows_per_call"].string_value == python_ort.parameters["rows_per_call"].string_value == "64"

    native = parse(encoder_config(scoring, ServingSettings(Runtime.ONNXRUNTIME, precision="int8", encoder_instances=2,
                                                           cpu_cores=8), "logits", 3))
    assert native.platform == "onnxruntime_onnx"
    assert native.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert native.instance_group[0].count == 2
    assert native.parameters["intra_op_thread_count"].string_value == "4"  # 8 cores / 2 instances
    assert native.parameters["inter_op_thread_count"].string_value == "1"
    assert not native.HasField("dynamic_batching") and not native.HasField("optimization")
    assert native.max_batch_size == 101


@pytest.mark.parametrize("extra", [["--runtime", "python-torch"], ["--runtime", "tensorrt"], ["--gpu", "t4"],
                                   ["--runtime", "onnxruntime", "--gpu", "h100"]])
def test_int8_is_refused_off_the_cpu_runtimes_in_one_line(tmp_path, capsys, extra):
    from export import cli

    code = cli.main(["--model", str(tmp_path / "never-loaded"), "--precision", "int8", *extra])
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert "--precision int8 is for the CPU runtimes (python-ort, python-ov, openvino, onnxruntime" in error
    assert "\n" not in error


def test_gate_options_need_int8(tmp_path, capsys):
    from export import cli

    checkpoint = write_modelscope_structbert(tmp_path / "ms")
    assert cli.main(["--model", str(checkpoint), "--gpu", "none", "--texts", str(tmp_path / "t.txt"),
                     "--validate-only"]) == 1
    assert "add --precision int8" in capsys.readouterr().err
    assert cli.main(["--model", str(checkpoint), "--precision", "int8", "--gate-requests", "0"]) == 1
    assert "--gate-requests must be at least 1" in capsys.readouterr().err


def test_export_enforces_the_gate_and_report_mode_records_it(tmp_path, capsys):
    """A tiny random checkpoint's INT8 answers are far from FP32 (32 hidden units: rounding is large next
    to the weights): enforced, the export fails and writes nothing; in report mode it is exported with
    the figures recorded."""
    from export import cli

    checkpoint = str(write_modelscope_structbert(tmp_path / "ms"))
    repository = tmp_path / "repository"
    common = ["--model", checkpoint, "--repository", str(repository), "--max-length", "64", "--precision", "int8",
              "--gate-requests", "24"]
    assert cli.main(common) == 1
    error = capsys.readouterr().err
    assert "INT8 accuracy gate failed" in error and "top-1 agreement" in error
    assert not repository.exists()

    assert cli.main([*common, "--validate-only", "--accuracy-gate", "report"]) == 0
    out = capsys.readouterr().out
    assert "accuracy gate NOT passed" in out and "nothing written" in out
    assert not repository.exists()

    assert cli.main([*common, "--accuracy-gate", "report"]) == 0
    info = json.loads((repository / "encoder" / "export.json").read_text())
    assert info["precision"] == "int8" and info["int8_agreement"]["passed"] is False
    assert info["int8_agreement"]["requests"] == 24 and info["int8_agreement"]["gate"] == "report"
    config = parse_file(repository / "encoder" / "config.pbtxt")
    assert config.parameters["one_run_per_request"].string_value == "true"
    assert 'string_value: "int8"' in (repository / "zero_shot" / "config.pbtxt").read_text()


def parse_file(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
