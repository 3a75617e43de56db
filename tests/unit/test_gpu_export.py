"""GPU export paths, as far as a machine without a GPU or TensorRT can check them: the plain-torch
encoder against the checkpoint's PyTorch model, per-GPU profiles, the generated configs (parsed with
tritonclient's model_config_pb2), TensorRT profiles and builder calls (through a stand-in for the
`tensorrt` module, since TensorRT cannot run here), and the staged repository swap."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export import cli, pipeline
from export.checkpoint import load_checkpoint
from export.errors import ExportError
from export.gpu_profiles import CARDS, MEMORY_SHARE, STRUCTBERT_LARGE, ModelShape, gpu_profile
from export.hf2torch import export_plain_torch, plain_torch_runner
from export.onnx2trt import (
    FP32_SENSITIVE_LAYER_TYPES,
    build_engine,
    import_tensorrt,
    sequence_profiles,
)
from export.random_checkpoint import write_huggingface_nli, write_modelscope_structbert
from export.repository import Runtime, ServingSettings, encoder_config, to_pbtxt
from export.repository_files import staged_repository
from zsc_server import batching_policy
from zsc_server.batching_policy import REPLAY_OVERHEAD_TOKENS
from zsc_server.settings import ScoringSettings
from zsc_server.tokenization import ENCODER_INPUTS
from zsc_server.torch_encoder import TorchEncoder, replay_choices, replay_plan

KIND = model_config_pb2.ModelInstanceGroup


def parse(config: dict) -> model_config_pb2.ModelConfig:
    return text_format.Parse(to_pbtxt(config), model_config_pb2.ModelConfig())


def random_feeds(rows: int, sequence: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, sequence + 1, size=rows)
    mask = (np.arange(sequence)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": rng.integers(1, 500, size=(rows, sequence)) * mask, "attention_mask": mask,
            "token_type_ids": (np.arange(sequence)[None, :] >= lengths[:, None] // 2).astype(np.int64) * mask}


@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("writer", [write_modelscope_structbert, write_huggingface_nli])
def test_plain_torch_bert_matches_the_checkpoint(tmp_path, writer, layout):
    ckpt = load_checkpoint(str(writer(tmp_path / "ckpt")))
    run = plain_torch_runner(export_plain_torch(ckpt, tmp_path / "model.pt"), layout)
    for rows, sequence in ((1, 16), (5, 32), (3, 64)):
        feeds = random_feeds(rows, sequence, seed=rows)
        with torch.inference_mode():
            want = ckpt.module.eval()(*(torch.from_numpy(feeds[n]) for n in ENCODER_INPUTS)).numpy()
        np.testing.assert_allclose(run(feeds), want, atol=1e-4)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_plain_torch_mean_pooling_matches_the_offline_minilm(tmp_path, layout):
    ckpt = load_checkpoint("offline-minilm")
    run = plain_torch_runner(export_plain_torch(ckpt, tmp_path / "model.pt"), layout)
    feeds = random_feeds(4, 24, seed=7)
    with torch.inference_mode():
        want = ckpt.module.eval()(*(torch.from_numpy(feeds[n]) for n in ENCODER_INPUTS)).numpy()
    np.testing.assert_allclose(run(feeds), want, atol=1e-4)


def test_torch_encoder_answers_each_request_of_a_batch_as_if_alone(tmp_path):
    ckpt = load_checkpoint(str(write_modelscope_structbert(tmp_path / "ckpt")))
    encoder = TorchEncoder(str(export_plain_torch(ckpt, tmp_path / "model.pt")), device="cpu")
    feeds = [random_feeds(3, 16, 1), random_feeds(1, 32, 2), random_feeds(6, 32, 3)]
    for alone, batched in zip((encoder.run_batch([f])[0] for f in feeds), encoder.run_batch(feeds)):
        assert batched.shape == alone.shape
        np.testing.assert_allclose(batched, alone, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_replay_equals_eager_for_padded_batches(tmp_path):
    ckpt = load_checkpoint(str(write_modelscope_structbert(tmp_path / "ckpt")))
    path = str(export_plain_torch(ckpt, tmp_path / "model.pt"))
    graphs = TorchEncoder(path, device="cuda", precision="fp32", graph_batch_sizes=(1, 4, 8))
    eager = TorchEncoder(path, device="cuda", precision="fp32", graph_batch_sizes=())
    # 11 and 17: above the largest graph, replayed as several graphs; 17 = 8 + 8 + 1 replays one twice
    for rows in (1, 3, 5, 8, 11, 17):
        feeds = random_feeds(rows, 32, rows)
        np.testing.assert_allclose(graphs.run_batch([feeds])[0], eager.run_batch([feeds])[0], atol=1e-4)
    assert graphs.plan(17, 32) == [8, 8, 1]
    assert set(graphs.graphs) == {(1, 32), (4, 32), (8, 32)}


def test_a_batch_is_replayed_as_the_captured_sizes_that_waste_least():
    sizes = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    choices = replay_choices(512, sizes, overhead_rows=16)  # 512 row-tokens of overhead at 32 tokens
    # 143 rows: 128 + 16 (one padded row and one more replay) beats padding 113 rows up to 256
    assert replay_plan(143, choices) == [128, 16]
    assert replay_plan(256, choices) == [256]
    assert replay_plan(250, choices) == [256]  # 6 padded rows cost less than a second replay
    assert replay_plan(512, choices) == [256, 256]
    assert replay_plan(3, choices) == [4] and replay_plan(0, choices) == []
    for rows in range(1, 513):
        plan = replay_plan(rows, choices)
        assert sum(plan[:-1]) < rows <= sum(plan)  # every replay full but the last, which covers the rest
        assert sum(plan) - rows <= 16 + 256 // 2  # never pads more than a replay's overhead beyond a half
    # a huge overhead: one replay, padded up to the next size (as long as one size is big enough)
    assert replay_plan(143, replay_choices(512, sizes, overhead_rows=1e9)) == [256]
    with pytest.raises(ValueError, match="at least one captured batch size"):
        replay_choices(8, (), 16)


def test_gpu_profiles_fit_their_cards_and_say_what_is_projected():
    for gpu, card in CARDS.items():
        profile = gpu_profile(gpu)
        assert profile.preferred_batch_sizes[-1] <= profile.max_batch
        assert profile.graph_batch_sizes[-1] <= profile.max_batch
        used = STRUCTBERT_LARGE.activation_bytes(profile.max_batch, profile.max_length) * profile.encoder_instances
        assert used + STRUCTBERT_LARGE.parameter_count() * 2 <= card.memory_gib * 2**30 * MEMORY_SHARE
        assert ("projected" in profile.basis.split(";")[0]) is not bool(card.measured)
    # longer sequences take more memory per pair: where it runs short, the batch limit comes down
    wide = ModelShape(hidden=2048, layers=24, heads=16, intermediate=8192)
    assert gpu_profile("t4", wide, max_length=512).max_batch < gpu_profile("t4", wide, max_length=128).max_batch
    # activations measured on an H200: 20,484 bytes per (pair, token) in the large shape at FP16
    assert abs(STRUCTBERT_LARGE.activation_bytes(512, 64) / (512 * 64) - 20484) < 8
    assert gpu_profile("h100").preferred_batch_sizes[-1] > gpu_profile("t4").preferred_batch_sizes[-1]
    with pytest.raises(ValueError, match="unknown GPU"):
        gpu_profile("k80")


def test_encoder_configs_of_the_gpu_runtimes():
    scoring = ScoringSettings(max_length=128)
    trt = parse(encoder_config(scoring, ServingSettings(Runtime.TENSORRT, tensorrt_profiles=len(scoring.buckets),
                                                        preferred_batch_sizes=(64, 128), max_batch=512), "logits", 3))
    assert trt.platform == "tensorrt_plan" and trt.max_batch_size == 512
    assert list(trt.instance_group[0].profile) == [str(i) for i in range(len(scoring.buckets))]
    assert list(trt.dynamic_batching.preferred_batch_size) == [64, 128]

    ort = parse(encoder_config(scoring, ServingSettings(Runtime.ONNXRUNTIME, precision="fp16"), "logits", 3))
    [accelerator] = ort.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert ort.instance_group[0].kind == KIND.KIND_GPU

    torch_gpu = parse(encoder_config(scoring, ServingSettings(Runtime.PYTHON_TORCH, precision="fp16"), "logits", 3))
    assert torch_gpu.backend == "python" and torch_gpu.instance_group[0].kind == KIND.KIND_GPU
    assert json.loads(torch_gpu.parameters["sequence_buckets"].string_value) == list(scoring.buckets)
    torch_cpu = parse(encoder_config(scoring, ServingSettings(Runtime.PYTHON_TORCH, torch_device="cpu"), "logits", 3))
    assert torch_cpu.instance_group[0].kind == KIND.KIND_CPU

    queue = trt.dynamic_batching.default_queue_policy
    # bounded in time, not in count (export/pipeline.py: a full queue idles Triton 2.51's batcher)
    assert queue.max_queue_size == 0 and queue.default_timeout_microseconds > 0
    assert queue.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT


def test_gpu_profile_export_writes_the_profile_into_the_configs(tmp_path):
    checkpoint = write_modelscope_structbert(tmp_path / "ckpt")
    repository = tmp_path / "repository"
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "h100",
                     "--torch-device", "cpu", "--max-length", "64"]) == 0
    encoder = text_format.Parse((repository / "encoder" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    h100 = gpu_profile("h100", max_length=64)
    assert encoder.backend == "python" and encoder.parameters["precision"].string_value == "fp16"
    assert list(encoder.dynamic_batching.preferred_batch_size) == list(h100.preferred_batch_sizes)
    assert encoder.dynamic_batching.max_queue_delay_microseconds == h100.queue_delay_us
    assert encoder.instance_group[0].count == h100.encoder_instances
    assert encoder.max_batch_size == h100.max_batch
    assert json.loads(encoder.parameters["graph_batch_sizes"].string_value) == list(h100.graph_batch_sizes)
    assert encoder.parameters["replay_overhead_tokens"].string_value == str(REPLAY_OVERHEAD_TOKENS)
    # Triton 2.51's batcher, with a queue policy, can sleep 500 ms with requests waiting: the budget outlasts it
    queue = encoder.dynamic_batching.default_queue_policy
    assert queue.default_timeout_microseconds == batching_policy.GPU_QUEUE_BUDGET_MS * 1000 > 500_000
    assert queue.max_queue_size == 0 and batching_policy.QUEUE_BUDGET_MS[0] * 1000 > 500_000
    assert encoder.parameters["layout"].string_value == "padded"
    info = json.loads((repository / "encoder" / "export.json").read_text())
    assert (info["runtime"], info["gpu_profile"], info["buckets"]) == ("python-torch", "h100", [16, 32, 64])


def test_the_packed_layout_is_exported_validated_and_refused_where_it_cannot_run(tmp_path, capsys):
    checkpoint = write_modelscope_structbert(tmp_path / "ckpt")
    repository = tmp_path / "repository"
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "h100",
                     "--torch-device", "cpu", "--max-length", "64", "--torch-layout", "packed"]) == 0
    encoder = text_format.Parse((repository / "encoder" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert encoder.parameters["layout"].string_value == "packed"
    assert "validating the plain-torch encoder (packed layout; CPU, FP32)" in capsys.readouterr().out
    refusals = {("--runtime", "python-ort"): "--torch-layout packed is for --runtime python-torch, not python-ort",
                ("--precision", "fp32"): "variable-length kernel\\) takes FP16 or BF16 on a GPU, not FP32"}
    for flags, message in refusals.items():
        with pytest.raises(ExportError, match=message):
            pipeline.export_model(pipeline.ExportOptions(model=str(checkpoint), repository=tmp_path / "refused",
                                                         gpu="h100", torch_layout="packed",
                                                         **{flags[0][2:]: flags[1]}))
    with pytest.raises(ExportError, match="--torch-layout must be one of padded, packed, got 'ragged'"):
        pipeline.ExportOptions(model=str(checkpoint), torch_layout="ragged")


def test_tensorrt_profiles():
    profiles = sequence_profiles((16, 32, 64), max_batch=257, opt_batch=32)
    assert [p.shapes() for p in profiles][1] == ((1, 32), (32, 32), (257, 32))
    with pytest.raises(ExportError, match="opt batch"):
        sequence_profiles((16,), max_batch=8, opt_batch=16)


class FakeTensorRT:
    """Stands in for the `tensorrt` module (TensorRT cannot run on this machine): records what the
    builder is asked for, so the profile and precision wiring is checked without a GPU."""

    float32 = "float32"

    def __init__(self, layer_types: list[str], parse_ok: bool = True,
                 inputs: tuple[str, ...] = ENCODER_INPUTS) -> None:
        self.flags, self.profiles, self.layers = set(), [], []
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, level: None})
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        self.BuilderFlag = types.SimpleNamespace(FP16="fp16", OBEY_PRECISION_CONSTRAINTS="obey")
        self.LayerType = types.SimpleNamespace(**{name: name for name in {*FP32_SENSITIVE_LAYER_TYPES,
                                                                         "MATRIX_MULTIPLY"}})
        fake = self

        class Layer:
            def __init__(self, kind):
                self.type, self.precision, self.num_outputs, self.output_types = kind, None, 1, {}
                fake.layers.append(self)

            def set_output_type(self, index, dtype):
                self.output_types[index] = dtype

        network = types.SimpleNamespace(num_layers=len(layer_types), num_inputs=len(inputs),
                                        get_input=lambda index: types.SimpleNamespace(name=inputs[index]))
        built = [Layer(kind) for kind in layer_types]
        network.get_layer = lambda index: built[index]

        class Profile:
            def __init__(self):
                self.shapes = {}
                fake.profiles.append(self)

            def set_shape(self, name, minimum, optimum, maximum):
                self.shapes[name] = (minimum, optimum, maximum)

        config = types.SimpleNamespace(set_memory_pool_limit=lambda pool, size: None,
                                       set_flag=lambda flag: fake.flags.add(flag),
                                       add_optimization_profile=lambda profile: None)
        self.Builder = lambda logger: types.SimpleNamespace(
            create_network=lambda flags: network, create_builder_config=lambda: config,
            create_optimization_profile=Profile, build_serialized_network=lambda net, cfg: b"PLAN")
        errors = [] if parse_ok else ["unsupported operator Foo"]
        self.OnnxParser = lambda net, logger: types.SimpleNamespace(
            parse_from_file=lambda path: parse_ok, num_errors=len(errors), get_error=lambda i: errors[i])


def test_engine_build_asks_for_one_exact_profile_per_bucket_and_fp16(tmp_path):
    trt = FakeTensorRT(["MATRIX_MULTIPLY", "NORMALIZATION", "SOFTMAX", "MATRIX_MULTIPLY"])
    profiles = sequence_profiles((16, 32, 64), max_batch=257, opt_batch=32)
    report = build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", profiles, fp16=True, trt=trt)
    assert (tmp_path / "model.plan").read_bytes() == b"PLAN"
    assert trt.flags == {"fp16"} and report.fp32_layers == 0
    assert [p.shapes["input_ids"] for p in trt.profiles] == [p.shapes() for p in profiles]
    assert all(set(p.shapes) == set(ENCODER_INPUTS) for p in trt.profiles)

    trt = FakeTensorRT(["MATRIX_MULTIPLY", "NORMALIZATION", "SOFTMAX", "MATRIX_MULTIPLY"])
    report = build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", profiles, fp16=True,
                          fp32_sensitive_layers=True, trt=trt)
    assert trt.flags == {"fp16", "obey"} and report.fp32_layers == 2
    assert [layer.precision for layer in trt.layers] == [None, "float32", "float32", None]


def test_engine_profiles_name_the_graphs_own_inputs(tmp_path):
    """A RoBERTa-family graph has no token_type_ids: the profiles set exactly the inputs it declares."""
    trt = FakeTensorRT(["MATRIX_MULTIPLY"], inputs=("input_ids", "attention_mask"))
    build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", sequence_profiles((16, 32), 9, 8), trt=trt)
    assert all(set(p.shapes) == {"input_ids", "attention_mask"} for p in trt.profiles)


def test_engine_build_reports_parser_errors(tmp_path):
    with pytest.raises(ExportError, match="unsupported operator Foo"):
        build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", sequence_profiles((16,), 8, 8),
                     trt=FakeTensorRT([], parse_ok=False))


def test_tensorrt_export_without_tensorrt_names_the_container_and_keeps_the_repository(tmp_path, capsys):
    try:
        import_tensorrt()
        pytest.skip("TensorRT is installed here: the message for its absence cannot be checked")
    except ExportError:
        pass
    checkpoint = write_modelscope_structbert(tmp_path / "ckpt")
    repository = tmp_path / "repository"
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "none", "--max-length",
                     "32"]) == 0
    before = {p: p.read_bytes() for p in repository.rglob("*") if p.is_file()}
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--runtime", "tensorrt",
                     "--max-length", "32"]) == 1
    error = capsys.readouterr().err
    assert "docker compose --profile export run" in error and "tensorrt" in error.lower()
    assert {p: p.read_bytes() for p in repository.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if ".staging-" in p.name or ".retired-" in p.name] == []


def test_staged_repository_swaps_models_in_only_on_success(tmp_path):
    repository = tmp_path / "repository"
    (repository / "encoder").mkdir(parents=True)
    (repository / "encoder" / "old.txt").write_text("old")
    (repository / "other").mkdir()
    with pytest.raises(RuntimeError), staged_repository(repository) as staging:
        (staging / "encoder").mkdir()
        (staging / "encoder" / "new.txt").write_text("new")
        raise RuntimeError("interrupted half way")
    assert [p.name for p in (repository / "encoder").iterdir()] == ["old.txt"]
    with staged_repository(repository) as staging:
        (staging / "encoder").mkdir()
        (staging / "encoder" / "new.txt").write_text("new")
    assert [p.name for p in (repository / "encoder").iterdir()] == ["new.txt"]
    assert (repository / "other").is_dir()  # models the export does not write are left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repository"]


def test_an_export_killed_half_way_leaves_the_served_repository_as_it_was(tmp_path):
    import subprocess
    import sys

    checkpoint = write_modelscope_structbert(tmp_path / "ckpt")
    repository = tmp_path / "repository"
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "none", "--max-length",
                     "32"]) == 0
    before = {p: p.read_bytes() for p in repository.rglob("*") if p.is_file()}
    (tmp_path / ".repository.staging-old").mkdir()  # as a process killed during the swap leaves it
    export = subprocess.Popen([sys.executable, "-m", "export", "--model", str(checkpoint), "--repository",
                               str(repository), "--gpu", "none", "--max-length", "64"],
                              stdout=subprocess.PIPE, text=True)
    try:
        for line in export.stdout:
            if line.startswith("[export 3/5]"):  # the ONNX export is under way: kill it there
                export.kill()
                break
    finally:
        export.kill()
        export.wait(timeout=60)
    assert export.returncode == -9
    assert {p: p.read_bytes() for p in repository.rglob("*") if p.is_file()} == before
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "none", "--max-length",
                     "64"]) == 0
    assert json.loads((repository / "encoder" / "export.json").read_text())["max_length"] == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "repository"]  # leftovers cleared


def test_the_automatic_queue_budget_covers_two_full_batches_within_its_bounds():
    # MiniLM on one core here: 21.7 ms for 6 pairs; a full batch of 257 pairs ~0.93 s, so ~1.86 s of budget
    budget, full_batch_ms = pipeline.queue_budget_from_sample(21.7, 6, 257)
    assert round(full_batch_ms) == 929 and budget == 1858
    # a tiny model: never under the floor that outlasts the dynamic batcher's 500 ms sleep
    assert pipeline.queue_budget_from_sample(0.6, 5, 257)[0] == batching_policy.QUEUE_BUDGET_MS[0] == 600
    # a large model on a small CPU: capped, so that overload still ends in refusals
    assert pipeline.queue_budget_from_sample(400.0, 6, 257)[0] == batching_policy.QUEUE_BUDGET_MS[1]
