"""FP8 encoder layers (zsc_server.torch_fp8, --precision fp8 on python-torch): the CPU's emulation (FP8 values,
FP32 products) is what the export's accuracy gate runs where no FP8 GPU is at hand, so it is checked here
against the FP8 arithmetic written out; the GPU kernel (torch._scaled_mm) against the emulation in the
gpu-marked test, on the GPU run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from export import cli, pipeline
from export.errors import ExportError
from export.random_checkpoint import write_modelscope_structbert
from tests.tiny_bert import requests, save_tiny_bert, tiny_bert
from zsc_server.torch_encoder import TorchEncoder
from zsc_server.torch_fp8 import FP8, FP8_COMPUTE_CAPABILITY, FP8_MAX, Fp8Linear, quantize_rows, to_fp8


def test_each_row_is_scaled_so_that_its_largest_value_is_fp8s_largest():
    x = torch.randn(4, 64) * torch.tensor([[1e-3], [1.0], [30.0], [1e4]])
    values, scale = quantize_rows(x)
    assert values.dtype == FP8 and scale.shape == (4, 1)
    assert values.float().abs().amax(dim=1).tolist() == [FP8_MAX] * 4
    # three mantissa bits: each value within 1/16 of itself (or of the row's smallest normal step)
    error = (values.float() * scale - x).abs()
    assert torch.all(error <= x.abs() / 16 + scale * 2**-6)
    # per row: a row a million times larger does not coarsen the others
    alone, _ = quantize_rows(x[:1])
    assert torch.equal(alone.float(), values[:1].float())


def test_the_emulated_fp8_linear_is_fp8_arithmetic_summed_in_fp32():
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    fp8 = Fp8Linear(linear)
    x = torch.randn(2, 5, 64)
    weights, weight_scale = quantize_rows(linear.weight.detach())
    activations, scale = quantize_rows(x.reshape(-1, 64))
    written_out = (activations.float() * scale) @ (weights.float() * weight_scale).t() + linear.bias.detach()
    with torch.no_grad():
        got, exact = fp8(x), linear(x)
    torch.testing.assert_close(got, written_out.reshape(2, 5, 32), atol=1e-5, rtol=0)
    assert 0 < (got - exact).abs().max() < 0.1 * exact.abs().max()  # quantized: close, not equal


def test_fp8_replaces_the_six_products_of_each_layer_and_nothing_else():
    bert = to_fp8(tiny_bert(), torch.bfloat16)
    assert sum(isinstance(m, Fp8Linear) for m in bert.modules()) == 6 * 2
    assert isinstance(bert.pooler.dense, nn.Linear) and isinstance(bert.classifier, nn.Linear)
    # the FP8 layers quantized from the FP32 weights, every other layer in the serving dtype
    fp32 = tiny_bert()
    weights, _ = quantize_rows(fp32.encoder.layer[0].attention.self.query.weight.detach())
    assert torch.equal(bert.encoder.layer[0].attention.self.query.weight.float(), weights.float())
    assert {p.dtype for p in bert.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("head", ["classifier", "mean_pool"])
def test_fp8_answers_do_not_depend_on_the_batch_they_run_in(tmp_path, head):
    """Per-token scales: a request's FP8 scores are the same alone, in a batch, padded or packed, so merged
    requests (and the label cache) keep their answers, unlike per-tensor INT8."""
    save_tiny_bert(tmp_path / "model.pt", head)
    # two requests of each width: the padded layout runs each width's requests together
    batch = requests([(16, [3, 16, 7]), (32, [20, 32, 9]), (16, [12, 2]), (32, [31])])
    fp32 = TorchEncoder(str(tmp_path / "model.pt"), device="cpu", precision="fp32").run_batch(batch)
    alone = [TorchEncoder(str(tmp_path / "model.pt"), device="cpu", precision="fp8").run_batch([f])[0] for f in batch]
    for layout in ("padded", "packed"):
        encoder = TorchEncoder(str(tmp_path / "model.pt"), device="cpu", precision="fp8", layout=layout)
        for together, single, exact in zip(encoder.run_batch(batch), alone, fp32):
            np.testing.assert_allclose(together, single, atol=1e-5, rtol=0)
            assert 0 < np.abs(together - exact).max() < 0.1 * np.abs(exact).max()  # quantized: close, not equal


def test_unknown_precisions_are_refused_by_name(tmp_path):
    save_tiny_bert(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16, fp8, got 'fp4'"):
        TorchEncoder(str(tmp_path / "model.pt"), device="cpu", precision="fp4")


def test_an_fp8_export_runs_the_accuracy_gate_and_is_refused_where_fp8_cannot_run(tmp_path, capsys):
    checkpoint = write_modelscope_structbert(tmp_path / "ckpt")
    repository = tmp_path / "repository"
    # random weights score near-ties, which any rounding reorders: the gate reports instead of enforcing
    assert cli.main(["--model", str(checkpoint), "--repository", str(repository), "--gpu", "h100",
                     "--torch-device", "cpu", "--max-length", "64", "--precision", "fp8", "--torch-layout", "packed",
                     "--accuracy-gate", "report", "--gate-requests", "12"]) == 0
    printed = capsys.readouterr().out
    assert "FP8 runs emulated on the CPU" in printed and "FP8 vs FP32 on 12 requests" in printed
    info = json.loads((repository / "encoder" / "export.json").read_text())
    assert info["precision"] == "fp8" and info["fp8_agreement"]["precision"] == "fp8"
    assert info["fp8_agreement"]["requests"] == 12 and "int8_agreement" not in info
    assert '"fp8"' in (repository / "encoder" / "config.pbtxt").read_text()
    refusals = {("python-ort", "h100"): "--precision fp8 is python-torch's",
                ("python-torch", "t4"): "which the NVIDIA T4 lacks: use fp16, or one of l4, h100, h200",
                ("python-torch", "none"): "no GPU profile \\(no GPU visible here, or --gpu none\\): --gpu l4, h100"}
    for (runtime, gpu), message in refusals.items():
        with pytest.raises(ExportError, match=message):
            # refused before the checkpoint is read: the model's path does not exist
            pipeline.export_model(pipeline.ExportOptions(model=str(tmp_path / "absent"), runtime=runtime, gpu=gpu,
                                                         precision="fp8", repository=tmp_path / "refused"))


def has_fp8_gpu() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= FP8_COMPUTE_CAPABILITY


@pytest.mark.gpu
def test_fp8_on_the_gpu_computes_what_the_cpu_emulates():
    if not has_fp8_gpu():
        pytest.skip("FP8 matrix products need a GPU with FP8 tensor cores")
    torch.manual_seed(0)
    linear = nn.Linear(1024, 4096)
    x = torch.randn(160, 1024)
    with torch.no_grad():
        emulated = Fp8Linear(linear)(x)
        on_gpu = Fp8Linear(linear.cuda())(x.cuda().bfloat16()).float().cpu()
    # the same FP8 values; the GPU rounds its BF16 input and output (8 bits of mantissa)
    torch.testing.assert_close(on_gpu, emulated, atol=0.02 * emulated.abs().max().item(), rtol=0.02)


@pytest.mark.gpu
def test_fp8_in_the_packed_layouts_cuda_graphs_answers_as_the_cpu_emulates(tmp_path):
    if not has_fp8_gpu():
        pytest.skip("FP8 matrix products need a GPU with FP8 tensor cores")
    save_tiny_bert(tmp_path / "model.pt")
    batch = requests([(16, [3, 16, 7]), (32, [20, 32, 9]), (16, [12, 2]), (32, [31])])
    emulated = TorchEncoder(str(tmp_path / "model.pt"), device="cpu", precision="fp8").run_batch(batch)
    on_gpu = TorchEncoder(str(tmp_path / "model.pt"), device="cuda", precision="fp8", layout="packed",
                          sequence_buckets=(16, 32), max_rows=4, capture_all=True)
    for _ in range(2):  # every graph replayed twice
        for got, want in zip(on_gpu.run_batch(batch), emulated):
            np.testing.assert_allclose(got, want, atol=0.05, rtol=0)
