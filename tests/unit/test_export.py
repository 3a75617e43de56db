"""Export pieces without a server: configs, checkpoint loading errors, ONNX export + validation."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.checkpoint import load_checkpoint
from export.errors import CheckpointError, DownloadError, ValidationError
from export.random_checkpoint import write_huggingface_nli, write_modelscope_structbert
from export.repository import (
    WARM_UP_INPUT,
    WARM_UP_OUTPUT,
    Runtime,
    ServingSettings,
    encoder_config,
    ensemble_config,
    postprocess_config,
    preprocess_config,
    to_pbtxt,
)
from export.torch2onnx import Precision, export_onnx
from export.validate import label_ranking, validate_onnx
from zsc_server.label_cache import LabelCacheSettings
from zsc_server.onnx_encoder import OnnxEncoder
from zsc_server.settings import ScoringSettings
from zsc_server.tokenization import ENCODER_INPUTS, EncodedBatch


def parse(config: dict) -> model_config_pb2.ModelConfig:
    return text_format.Parse(to_pbtxt(config), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("runtime", list(Runtime))
def test_ensemble_maps_name_tensors_the_models_declare(runtime):
    scoring = ScoringSettings()
    serving = ServingSettings(runtime=runtime)
    models = {
        "preprocess": parse(preprocess_config(scoring, serving)),
        "encoder": parse(encoder_config(scoring, serving, "logits", 3)),
        "postprocess": parse(postprocess_config(scoring)),
    }
    ensemble = parse(ensemble_config("logits"))
    produced = {i.name for i in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = models[step.model_name]
        # the launcher's warm-up tensor goes to the preprocess model directly, never through the ensemble
        assert set(step.input_map) == {i.name for i in model.input} - {WARM_UP_INPUT["name"]}
        assert WARM_UP_OUTPUT["name"] not in step.output_map
        assert set(step.input_map.values()) <= produced, f"{step.model_name} reads an unproduced tensor"
        assert set(step.output_map) <= {o.name for o in model.output}
        produced |= set(step.output_map.values())
    assert {o.name for o in ensemble.output} <= produced
    assert not {i.name for i in ensemble.input} & {o.name for o in ensemble.output}
    # all optional to Triton; the preprocess names a missing TEXT / CANDIDATE_LABELS itself
    assert [i.optional for i in ensemble.input] == [True, True, True, True]


def test_encoder_config_per_runtime():
    scoring = ScoringSettings(max_labels=100)
    ort_python = parse(encoder_config(scoring, ServingSettings(Runtime.PYTHON_ORT, queue_delay_us=500), "logits", 3))
    assert ort_python.backend == "python" and ort_python.max_batch_size == 101
    assert ort_python.dynamic_batching.max_queue_delay_microseconds == 500
    assert [i.name for i in ort_python.input] == list(ENCODER_INPUTS)
    native = parse(encoder_config(scoring, ServingSettings(Runtime.ONNXRUNTIME), "logits", 3))
    assert native.platform == "onnxruntime_onnx" and not native.backend
    assert native.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    # the Python-backend encoders take ragged batches (one call per sequence length); native backends merge
    # the tensors themselves and need equal shapes
    torch_python = parse(encoder_config(scoring, ServingSettings(Runtime.PYTHON_TORCH), "logits", 3))
    assert all(i.allow_ragged_batch for i in [*ort_python.input, *torch_python.input])
    assert not any(i.allow_ragged_batch for i in native.input)


def test_preprocess_config_carries_scoring_settings():
    scoring = ScoringSettings(max_length=96, default_template="关于{}")
    config = json.loads(json.dumps({"parameters": preprocess_config(scoring, ServingSettings())["parameters"]}))
    assert ScoringSettings.from_model_config(config) == scoring


def test_preprocess_config_carries_the_label_cache_settings_and_the_ensemble_passes_label_embeddings():
    cache = LabelCacheSettings.from_mib(0.5, export_id="abc123", encoder_output="sentence_embedding")
    config = preprocess_config(ScoringSettings(mode="embedding"), ServingSettings(), cache)
    parsed = parse(config)
    assert cache.budget_bytes == 524288
    assert LabelCacheSettings.from_model_config(json.loads(json.dumps(config))) == cache
    # without settings (an NLI export): the cache is off
    assert LabelCacheSettings.from_model_config(preprocess_config(ScoringSettings(), ServingSettings())) == \
        LabelCacheSettings()
    [warm_up] = [i for i in parsed.input if i.name == "warm_up"]
    assert warm_up.optional and warm_up.data_type == model_config_pb2.TYPE_STRING
    [preprocess_step, _, postprocess_step] = parse(ensemble_config("sentence_embedding")).ensemble_scheduling.step
    assert preprocess_step.output_map["label_embeddings"] == postprocess_step.input_map["label_embeddings"]
    [embeddings] = [i for i in parse(postprocess_config(ScoringSettings())).input if i.name == "label_embeddings"]
    assert embeddings.data_type == model_config_pb2.TYPE_FP32 and list(embeddings.dims) == [-1, -1]


def test_modelscope_layout_loads_with_structbert_indices(tmp_path):
    ckpt = load_checkpoint(str(write_modelscope_structbert(tmp_path / "ms")))
    assert (ckpt.layout, ckpt.mode.value, ckpt.output_name) == ("modelscope", "nli", "logits")
    assert (ckpt.entailment_index, ckpt.contradiction_index) == (0, 2)


def test_huggingface_layout_takes_indices_from_label2id(tmp_path):
    ckpt = load_checkpoint(str(write_huggingface_nli(tmp_path / "hf")))
    assert ckpt.layout == "huggingface"
    assert (ckpt.entailment_index, ckpt.contradiction_index) == (2, 0)


def test_missing_weights_are_reported(tmp_path):
    directory = write_modelscope_structbert(tmp_path / "ms")
    state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    del state["classifier.weight"]
    torch.save(state, directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights missing.*classifier.weight"):
        load_checkpoint(str(directory))


def test_non_nli_label2id_is_refused(tmp_path):
    directory = write_huggingface_nli(tmp_path / "hf")
    config = json.loads((directory / "config.json").read_text())
    config["label2id"] = {"positive": 0, "negative": 1, "neutral": 2}
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no label starting with 'entail'"):
        load_checkpoint(str(directory))


@pytest.mark.parametrize("model", ["/nonexistent/dir", "not-a-hub-id", "a/b/c"])
def test_bad_model_argument(model):
    with pytest.raises(CheckpointError):
        load_checkpoint(model)


def test_hub_download_without_network_is_one_clear_line(monkeypatch, tmp_path):
    # Point both hubs at a closed local port so the test behaves the same with or without network.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")
    for model_id in ("someone/some-nli-model", "damo/nlp_structbert_zero-shot-classification_chinese-base"):
        with pytest.raises(DownloadError) as raised:
            load_checkpoint(model_id, cache_dir=str(tmp_path))
        message = str(raised.value)
        assert model_id in message and "make export MODEL=/path/to/checkpoint" in message
        assert "\n" not in message


@pytest.mark.parametrize("precision", [p for p in Precision if p is not Precision.FP8])  # FP8: python-torch only
def test_onnx_export_validates_against_pytorch(tmp_path, precision):
    ckpt = load_checkpoint(str(write_modelscope_structbert(tmp_path / "ms")))
    path = export_onnx(ckpt.module, "logits", tmp_path / "model.onnx", precision)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, size=(4, 24))
    mask = np.ones_like(ids)
    mask[1, 10:] = 0
    batch = EncodedBatch(ids, mask, np.zeros_like(ids))
    ranking = label_ranking(ckpt.mode, ckpt.entailment_index)
    report = validate_onnx(ckpt.module, path, "logits", [batch], precision, ranking)
    assert report.max_abs_diff <= report.tolerance
    assert report.rows == 4
    if precision is Precision.FP32:
        assert report.max_abs_diff < 1e-4


def test_an_fp8_onnx_export_is_refused_by_name(tmp_path):
    ckpt = load_checkpoint(str(write_modelscope_structbert(tmp_path / "ms")))
    with pytest.raises(ValueError, match="FP8 is the python-torch runtime's"):
        export_onnx(ckpt.module, "logits", tmp_path / "model.onnx", Precision.FP8)
    assert not (tmp_path / "model.onnx").exists()


def test_validation_catches_a_wrong_model(tmp_path):
    ckpt = load_checkpoint(str(write_modelscope_structbert(tmp_path / "ms")))
    path = export_onnx(ckpt.module, "logits", tmp_path / "model.onnx", Precision.FP32)
    other = load_checkpoint(str(write_modelscope_structbert(tmp_path / "other", seed=5)))
    ids = np.full((2, 16), 7)
    with pytest.raises(ValidationError, match="disagrees"):
        validate_onnx(other.module, path, "logits", [EncodedBatch(ids, np.ones_like(ids), np.zeros_like(ids))],
                      Precision.FP32, label_ranking(other.mode, other.entailment_index))


def test_batched_equals_single_with_padding(tmp_path):
    """Requests merged by the dynamic batcher (padded to a common length) keep their answers."""
    ckpt = load_checkpoint(str(write_modelscope_structbert(tmp_path / "ms")))
    encoder = OnnxEncoder(str(export_onnx(ckpt.module, "logits", tmp_path / "m.onnx", Precision.FP32)))
    rng = np.random.default_rng(1)
    feeds = []
    for rows, length in [(3, 16), (1, 32), (5, 16)]:
        ids = rng.integers(5, 100, size=(rows, length))
        feeds.append({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    merged = encoder.run_batch(feeds)
    for feed, result in zip(feeds, merged):
        alone = encoder.run_batch([feed])[0]
        np.testing.assert_allclose(result["logits"], alone["logits"], atol=1e-5)
        assert result["logits"].shape == (feed["input_ids"].shape[0], 3)


def test_failed_export_leaves_the_repository_untouched(tmp_path, monkeypatch):
    from export import cli, encoder_artifact

    checkpoint = str(write_modelscope_structbert(tmp_path / "ms"))
    repository = tmp_path / "repository"
    assert cli.main(["--model", checkpoint, "--repository", str(repository), "--gpu", "none", "--max-length",
                     "32"]) == 0
    before = {p: p.read_bytes() for p in repository.rglob("*") if p.is_file()}

    def failing_validation(*args, **kwargs):
        raise ValidationError("ONNX disagrees with PyTorch: simulated")

    monkeypatch.setattr(encoder_artifact, "validate_onnx", failing_validation)
    assert cli.main(["--model", checkpoint, "--repository", str(repository), "--gpu", "none", "--max-length",
                     "64"]) == 1
    after = {p: p.read_bytes() for p in repository.rglob("*") if p.is_file()}
    assert after == before


def test_buckets_per_runtime_and_served_export_facts(tmp_path, capsys):
    import json

    from export import cli

    checkpoint = write_modelscope_structbert(tmp_path / "ms")
    repository = tmp_path / "repository"

    def exported(*extra: str) -> dict:
        assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "none",
                         "--max-length", "64",
                         *extra]) == 0
        return json.loads((repository / "encoder" / "export.json").read_text())

    assert exported()["buckets"] == [16, 24, 32, 40, 48, 56, 64]  # python-ort: CPU steps
    assert exported("--runtime", "onnxruntime")["buckets"] == [16, 32, 64]
    assert exported("--buckets", "32")["buckets"] == [32, 64]
    ensemble = (repository / "zero_shot" / "config.pbtxt").read_text()
    # the served config names the checkpoint by folder, never by the exporting machine's path
    assert 'string_value: "ms"' in ensemble and str(tmp_path) not in ensemble
    capsys.readouterr()
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "none", "--buckets",
                     "64,32"]) == 1
    assert "ascending" in capsys.readouterr().err
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "none", "--buckets",
                     "x"]) == 1
    assert "--buckets" in capsys.readouterr().err


def test_an_nli_export_has_no_label_cache_and_names_its_encoder_file(tmp_path, capsys):
    import hashlib

    from export import cli

    checkpoint = write_modelscope_structbert(tmp_path / "ms")
    repository = tmp_path / "repository"
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "none", "--max-length",
                     "32"]) == 0
    assert "label cache: none in NLI mode" in capsys.readouterr().out
    info = json.loads((repository / "encoder" / "export.json").read_text())
    assert info["label_cache_bytes"] == 0
    assert info["export_id"] == hashlib.sha256((repository / "encoder" / "1" / "model.onnx").read_bytes()).hexdigest()
    preprocess = text_format.Parse((repository / "preprocess" / "config.pbtxt").read_text(),
                                   model_config_pb2.ModelConfig())
    assert preprocess.parameters["label_cache_budget_bytes"].string_value == "0"
    assert preprocess.parameters["label_cache_export_id"].string_value == info["export_id"]
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "none",
                     "--label-cache-mb", "-1"]) == 1
    assert "--label-cache-mb must be at least 0" in capsys.readouterr().err


def test_every_choice_that_export_help_prints_is_accepted(capsys):
    from export.cli import build_parser

    parser = build_parser()
    parser.print_help()
    printed = capsys.readouterr().out
    for flag, enum_type in (("--precision", Precision), ("--runtime", Runtime)):
        for member in enum_type:
            assert member.value in printed and f"{enum_type.__name__}." not in printed
            assert getattr(parser.parse_args(["--model", "x", flag, member.value]), flag[2:]) is member


@pytest.mark.parametrize(("model", "message"), [
    ("/nonexistent/model", "/nonexistent/model: no such directory"),
    ("./nope", "./nope: no such directory"),
    ("offline-mini", "offline-mini: neither a directory here nor an offline alias (offline-minilm"),
])
def test_a_missing_checkpoint_is_named_for_what_it_looks_like(model, message):
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(model)


def test_a_stopped_export_removes_its_temporary_files_and_leaves_the_repository_alone(tmp_path):
    # `docker stop` sends SIGTERM; without a handler the temporary directory (the model's size) stayed behind
    import os
    import signal
    import subprocess
    import sys
    import time

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    export = subprocess.Popen([sys.executable, "-m", "export", "--model", "offline-minilm", "--repository",
                               str(tmp_path / "repository")], env=dict(os.environ, TMPDIR=str(temporary)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list(temporary.glob("zsc-export-*")) and time.monotonic() < deadline and export.poll() is None:
            time.sleep(0.2)
        assert list(temporary.glob("zsc-export-*")), "the export never started its work"
        time.sleep(2)  # into the work, with files written
        export.send_signal(signal.SIGTERM)
        _, stderr = export.communicate(timeout=120)
    finally:
        export.kill()  # a no-op once it has ended
    assert export.returncode == 130 and "export interrupted" in stderr, stderr
    assert not list(temporary.glob("zsc-export-*")) and not (tmp_path / "repository").exists()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".repository.")]  # no staging left


def test_a_sentence_transformers_checkpoint_is_cut_where_sentence_transformers_cuts(tmp_path):
    """Its max_seq_length, not the encoder's positions, is the model's own limit (--max-length model); a
    default prompt, which sentence-transformers puts before every text, is refused rather than left out."""
    from tests.hf_checkpoints import write_sentence_transformers

    checkpoint = write_sentence_transformers(tmp_path / "st", max_seq_length=96)
    assert load_checkpoint(str(checkpoint)).max_length_limit == 96  # the RoBERTa encoder's positions: 512
    (checkpoint / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: "}, "default_prompt_name": "query"}))
    with pytest.raises(CheckpointError, match="a default prompt"):
        load_checkpoint(str(checkpoint))
    (checkpoint / "config_sentence_transformers.json").write_text(json.dumps({"default_prompt_name": None}))
    assert load_checkpoint(str(checkpoint)).mode.value == "embedding"
