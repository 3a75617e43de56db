"""Compare the exported ONNX model with PyTorch on sample inputs (names, shapes, values)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from export.errors import ValidationError
from export.torch2onnx import Precision
from zsc_server.onnx_encoder import OnnxEncoder
from zsc_server.preprocess import Preprocessor
from zsc_server.settings import ENCODER_INPUTS, ScoringMode
from zsc_server.tokenization import EncodedBatch, PairTokenizer

# Max abs difference of the encoder output allowed against FP32 PyTorch. INT8 is exported as an FP32
# graph and checked as one; the quantized graph is checked against it by export/agreement.py.
TOLERANCE = {Precision.FP32: 1e-4, Precision.FP16: 5e-2, Precision.INT8: 1e-4}

SAMPLE_TEXTS = [
    "我的快递三天了还没到，请帮我查一下物流。",
    "这个产品质量太差了，我要投诉！",
    "The app crashes every time I open the settings page.",
]
SAMPLE_HYPOTHESES = ["咨询", "投诉", "建议", "a question about delivery", "a complaint"]


@dataclasses.dataclass
class ValidationReport:
    max_abs_diff: float
    tolerance: float
    rows: int
    order_agreement: float  # share of sample batches whose hypotheses rank in the same order
    # INT8 and FP8 only: the accuracy gate's figures (export/agreement.py), its "precision" among them
    accuracy_gate: dict | None = None

    def __str__(self) -> str:
        return (
            f"max abs diff {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}) over {self.rows} rows, "
            f"label-order agreement {self.order_agreement:.0%}"
        )


def sample_batches(tokenizer: PairTokenizer | Preprocessor, pairs: bool) -> list[EncodedBatch]:
    """The sample requests' encoder inputs: NLI pairs, or sentences; a Preprocessor's own rows (GLiClass)."""
    if isinstance(tokenizer, Preprocessor):
        return [tokenizer.prepare(text.encode(), [label.encode() for label in SAMPLE_HYPOTHESES]).encoded
                for text in SAMPLE_TEXTS]
    if pairs:
        return [tokenizer.encode_pairs(text, SAMPLE_HYPOTHESES) for text in SAMPLE_TEXTS]
    return [tokenizer.encode_sentences([text, *SAMPLE_HYPOTHESES]) for text in SAMPLE_TEXTS]


Runner = Callable[[dict[str, np.ndarray]], np.ndarray]
# the order the server would rank a sample batch's labels in, from the encoder's output for it
Ranking = Callable[[np.ndarray], list[int]]


def label_ranking(mode: ScoringMode, entailment_index: int) -> Ranking:
    """By entailment logit (NLI), by each label's own logit in its slot (GLiClass: the sample labels' slots, in
    order; the empty ones are not ranked), or by cosine to the text in row 0 (embedding mode)."""
    if mode is ScoringMode.GLICLASS:
        return lambda output: list(np.argsort(-output.reshape(-1)[:len(SAMPLE_HYPOTHESES)], kind="stable"))
    if mode is ScoringMode.NLI:
        return lambda output: list(np.argsort(-output[:, entailment_index], kind="stable"))

    def by_cosine(output: np.ndarray) -> list[int]:
        unit = output / np.linalg.norm(output, axis=1, keepdims=True).clip(1e-12)
        return list(np.argsort(-(unit[1:] @ unit[0]), kind="stable"))

    return by_cosine


def validate_outputs(module: torch.nn.Module, run: Runner, batches: list[EncodedBatch], precision: Precision,
                     what: str, ranking: Ranking) -> ValidationReport:
    """Compare `run` (the exported model, as the server runs it) with the FP32 PyTorch module."""
    module.eval()  # torch.onnx.export restores the mode it found, dropout included
    worst, rows, agree = 0.0, 0, 0
    names = getattr(module, "input_names", ENCODER_INPUTS)
    for batch in batches:
        feeds = batch.as_dict(names)
        got = np.asarray(run(feeds))
        with torch.inference_mode():
            want = module(*(torch.from_numpy(feeds[name]) for name in names)).float().numpy()
        if got.shape != want.shape:
            raise ValidationError(f"{what} output shape {got.shape} differs from PyTorch {want.shape}")
        if not np.all(np.isfinite(got)):
            raise ValidationError(f"{what} output contains NaN or inf")
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))))
        rows += got.shape[0]
        agree += int(ranking(got) == ranking(want))
    report = ValidationReport(worst, TOLERANCE[precision], rows, agree / len(batches))
    if report.max_abs_diff > report.tolerance:
        raise ValidationError(f"{what} disagrees with PyTorch: {report}")
    return report


def validate_onnx(
    module: torch.nn.Module, onnx_path: Path, output_name: str, batches: list[EncodedBatch],
    precision: Precision, ranking: Ranking,
) -> ValidationReport:
    encoder = OnnxEncoder(str(onnx_path))
    if encoder.output_names != [output_name]:
        raise ValidationError(f"ONNX outputs are {encoder.output_names}, expected [{output_name!r}]")

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return encoder.run_batch([feeds])[0][output_name]

    return validate_outputs(module, run, batches, precision, "ONNX", ranking)
