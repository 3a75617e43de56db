"""Export as a library function: ExportOptions holds every option and its default once; the CLI takes its
defaults from there, and the serving defaults agree with the batching policy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from export.cli import build_parser, options_from
from export.errors import ExportError
from export.options import DEFAULTS, ExportOptions
from export.pipeline import export_model
from export.repository import Runtime, ServingSettings
from export.torch2onnx import Precision
from zsc_server import batching_policy


def test_every_flag_is_an_option_with_the_same_default():
    parser = build_parser()
    flags = {action.dest: action.default for action in parser._actions if action.dest != "help"}
    fields = {field.name for field in dataclasses.fields(ExportOptions)}
    assert set(flags) == fields
    for name, default in flags.items():
        if name != "model":
            assert default == getattr(DEFAULTS, name), name


def test_the_cli_parses_into_the_options_the_function_takes():
    options = options_from(build_parser().parse_args(
        ["--model", "m", "--precision", "int8", "--runtime", "python-ort", "--labels", "a,b", "--labels", "c,d",
         "--max-length", "model", "--repository", "out"]))
    assert options == ExportOptions(model="m", precision="int8", runtime="python-ort", labels=["a,b", "c,d"],
                                    max_length="model", repository="out")
    assert options.precision is Precision.INT8 and options.runtime is Runtime.PYTHON_ORT
    assert options.labels == ("a,b", "c,d") and options.repository == Path("out")


def test_a_caller_may_name_enums_by_value_but_not_by_mistake():
    with pytest.raises(ValueError):
        ExportOptions(model="m", precision="int4")


def test_serving_defaults_are_the_batching_policys():
    serving = ServingSettings()
    assert serving.queue_delay_us == batching_policy.CPU_QUEUE_DELAY_US
    assert serving.encoder_instances == batching_policy.ENCODER_INSTANCES
    assert serving.preprocess_instances == DEFAULTS.preprocess_instances == batching_policy.PREPROCESS_INSTANCES
    assert serving.max_queue_size == DEFAULTS.max_queue_size == batching_policy.MAX_QUEUE_SIZE
    assert serving.graph_batch_sizes == batching_policy.GRAPH_BATCH_SIZES
    assert serving.replay_overhead_tokens == DEFAULTS.replay_overhead_tokens == batching_policy.REPLAY_OVERHEAD_TOKENS
    assert DEFAULTS.label_cache_mb == batching_policy.LABEL_CACHE_MIB


@pytest.mark.parametrize(("field", "value", "flag"), [
    ("rows_per_call", -1, "--rows-per-call"),  # was exported, and every request then failed
    ("encoder_instances", 0, "--encoder-instances"),
    ("queue_delay_us", -1, "--queue-delay-us"),  # was refused by protobuf at the end of the export
    ("max_text_bytes", 0, "--max-text-bytes"),
    ("queue_timeout_ms", "-5", "--queue-timeout-ms"),
    ("max_length", 4, "--max-length"),  # these two were named by internal field, after loading the checkpoint
    ("template", "no label here", "--template"),
])
def test_values_out_of_range_are_refused_before_any_work_naming_the_flag(field, value, flag):
    with pytest.raises(ExportError, match=f"^{flag} must "):
        ExportOptions(model="offline-minilm", **{field: value})


def test_fp16_is_refused_for_openvino_which_would_write_fp32(tmp_path):
    with pytest.raises(ExportError, match="python-ov converts the FP32 graph"):
        export_model(ExportOptions(model="offline-minilm", repository=tmp_path / "r", precision="fp16",
                                   runtime="python-ov", gpu="none"))
    assert not (tmp_path / "r").exists()


def test_a_repository_that_cannot_be_written_is_refused_before_the_work(tmp_path):
    # it used to fail with a traceback after the whole export (40 s for the small model)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for repository, problem in ((a_file, "is a file"), (a_file / "repository", "cannot write in")):
        with pytest.raises(ExportError, match=problem):
            export_model(ExportOptions(model="offline-minilm", repository=repository, gpu="none"))
