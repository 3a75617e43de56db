"""FP8 linear layers for the `python-torch` runtime (`--precision fp8`): Hopper's (and Ada's) FP8 tensor cores
for the encoder layers' six matrix products, which hold nearly all of BERT's arithmetic.

Weights are stored as float8_e4m3fn with one scale per output channel; activations are scaled per token at
run time (each row's largest magnitude maps to FP8's largest value), so one outlier token does not coarsen
the others. On a CUDA GPU the product is `torch._scaled_mm` with row-wise scales, which returns BF16 (its only
output type for row-wise scales), so an FP8 model keeps its other layers in BF16. On a CPU the same FP8 values
are multiplied in FP32: an emulation whose answers the export's accuracy gate compares with FP32's where no
FP8 GPU is at hand. Embeddings, LayerNorms, attention, the pooler and the classifier stay in BF16 (FP32 on a
CPU).
"""

from __future__ import annotations

import torch
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
# Ada (8.9) and Hopper (9.0) have FP8 tensor cores; torch._scaled_mm refuses older cards
FP8_COMPUTE_CAPABILITY = (8, 9)
FP8_HARDWARE = "FP8 tensor cores (compute capability 8.9 or later: Ada, Hopper)"


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of a 2-D tensor scaled into FP8's range: the FP8 values and the scales [rows, 1] (FP32), so
    that values x scales ≈ x."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


class Fp8Linear(nn.Module):
    """`linear` with FP8 weights (a scale per output channel) and FP8 activations (a scale per token)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight", weight)  # [out, in]: its transpose is the column-major operand _scaled_mm takes
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out]
        bias = (linear.bias.detach() if linear.bias is not None
                else torch.zeros(linear.out_features, device=weight.device))
        self.register_buffer("bias", bias.to(torch.bfloat16 if weight.is_cuda else torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        values, scale = quantize_rows(rows)
        if values.is_cuda:
            out = torch._scaled_mm(values, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, bias=self.bias,
                                   out_dtype=torch.bfloat16)
        else:
            out = (values.float() * scale) @ (self.weight.float() * self.weight_scale.t()).t() + self.bias
        return out.to(x.dtype).reshape(*x.shape[:-1], out.shape[-1])


def to_fp8(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """The plain-torch BERT (zsc_server.torch_bert.PlainBert, FP32 on its device) with FP8 encoder layers,
    quantized from the FP32 weights (each weight rounded once), and every other layer in `dtype`."""
    for layer in model.encoder.layer:
        attention = layer.attention
        for name in ("query", "key", "value"):
            setattr(attention.self, name, Fp8Linear(getattr(attention.self, name)))
        attention.output.dense = Fp8Linear(attention.output.dense)
        layer.intermediate.dense = Fp8Linear(layer.intermediate.dense)
        layer.output.dense = Fp8Linear(layer.output.dense)
    for parameter in model.parameters():  # the FP8 layers hold buffers, not parameters
        parameter.data = parameter.data.to(dtype)
    return model


def check_fp8_device(device: torch.device) -> None:
    """Refuses, naming the card, a GPU without FP8 tensor cores."""
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_COMPUTE_CAPABILITY:
        raise ValueError(f"--precision fp8 needs {FP8_HARDWARE}; {torch.cuda.get_device_name(device)} is "
                         f"{capability[0]}.{capability[1]}: export fp16")
