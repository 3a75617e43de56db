"""The accuracy gate: a quantized encoder's answers (INT8 on a CPU runtime, FP8 on python-torch) against the
FP32 encoder's, on real requests.

Requests: texts crossed with label sets and hypothesis templates, a fixed sample of them: by default
the texts and label sets of loadtest/data/workload.json, or a user's own (`--texts FILE`, `--labels`).
Both encoders answer each request the way the server does: the same preprocessing
(zsc_server.preprocess), one encoder run per request, the same scoring (zsc_server.postprocess).

Measured: |Δ score| for every (request, label), its maximum and mean, and top-1 agreement: the share of
requests whose top label is the same. A request whose top two labels FP32 itself scores within
TIE_MARGIN of each other has no decided top label, so the quantized encoder picking the other one counts as
agreement; the strict share is printed beside it. FP8 is held to the same limits as INT8.

The gate (GateThresholds) fails the export above any limit. The limits come from all-MiniLM-L6-v2, the
one real checkpoint available offline, on the gate's 192-request samples (an AVX2 CPU without VNNI,
ONNX Runtime 1.32), so that the quantization shipped passes and the coarser ones fail:
                             English (workload-en.json)         workload.json (mostly [UNK] to MiniLM)
  per-channel (export's)     max 0.048, mean 0.009, 99.5%       max 0.076, mean 0.018, 98.4%    pass
  per-tensor                 max 0.101, mean 0.021, 95.3%       max 0.152, mean 0.039, 99.5%    fail
  per-tensor, 7-bit weights  max 0.186, mean 0.051, 88.0%       max 0.290, mean 0.092, 85.4%    fail
Random-weight checkpoints cannot show accuracy: their scores are near-ties, which any rounding
reorders, or noise from weights too small to quantize (the tests' tiny model fails every limit); their
figures describe nothing a user would see.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np

from export.errors import ExportError, ValidationError
from zsc_server.postprocess import score_labels
from zsc_server.preprocess import Preprocessor
from zsc_server.scoring import InputError, parse_labels
from zsc_server.settings import ScoringSettings

WORKLOAD = Path(__file__).resolve().parents[1] / "loadtest" / "data" / "workload.json"
# ModelScope's default, and a Chinese and an English sentence template
TEMPLATES = ("{}", "这是一条{}。", "This text is about {}.")
DEFAULT_REQUESTS = 192
TIE_MARGIN = 0.02


class AccuracyGateError(ValidationError):
    """Quantized answers differ from FP32 beyond the gate's limits."""


@dataclasses.dataclass(frozen=True)
class GateThresholds:
    max_abs_delta: float = 0.10
    mean_abs_delta: float = 0.02
    top1_agreement: float = 0.95


GATE = GateThresholds()


@dataclasses.dataclass(frozen=True)
class GateRequest:
    text: str
    labels: tuple[str, ...]
    template: str


Answer = dict[str, float]  # label -> score


@dataclasses.dataclass(frozen=True)
class AgreementReport:
    requests: int
    scores: int
    max_abs_delta: float
    mean_abs_delta: float
    top1_agreement: float  # near-ties in FP32 (TIE_MARGIN) count as agreement
    top1_strict: float
    thresholds: GateThresholds = GATE
    precision: str = "int8"  # what was compared with FP32

    def failures(self) -> list[str]:
        limits = self.thresholds
        failed = []
        if self.max_abs_delta > limits.max_abs_delta:
            failed.append(f"max |Δ score| {self.max_abs_delta:.4f} > {limits.max_abs_delta}")
        if self.mean_abs_delta > limits.mean_abs_delta:
            failed.append(f"mean |Δ score| {self.mean_abs_delta:.4f} > {limits.mean_abs_delta}")
        if self.top1_agreement < limits.top1_agreement:
            failed.append(f"top-1 agreement {self.top1_agreement:.1%} < {limits.top1_agreement:.0%}")
        return failed

    def __str__(self) -> str:
        limits = self.thresholds
        return (f"{self.precision.upper()} vs FP32 on {self.requests} requests ({self.scores} scores): "
                f"max |Δ score| {self.max_abs_delta:.4f} (limit {limits.max_abs_delta}), "
                f"mean |Δ score| {self.mean_abs_delta:.4f} (limit {limits.mean_abs_delta}), "
                f"top-1 agreement {self.top1_agreement:.1%} (limit {limits.top1_agreement:.0%}; "
                f"{self.top1_strict:.1%} counting FP32 near-ties within {TIE_MARGIN} as disagreement)")

    def as_dict(self) -> dict:
        fields = dataclasses.asdict(self)
        fields["thresholds"] = dataclasses.asdict(self.thresholds)
        fields["tie_margin"] = TIE_MARGIN
        return fields


def compare_answers(fp32: list[Answer], quantized: list[Answer], thresholds: GateThresholds = GATE,
                    precision: str = "int8") -> AgreementReport:
    """Score differences and top-1 agreement of two models' answers to the same requests."""
    if len(fp32) != len(quantized) or not fp32:
        raise ValueError(f"need the same, non-zero number of answers, got {len(fp32)} and {len(quantized)}")
    deltas, agree, strict = [], 0, 0
    for want, got in zip(fp32, quantized):
        if set(want) != set(got):
            raise ValueError(f"the answers rank different labels: {sorted(want)} vs {sorted(got)}")
        deltas += [abs(got[label] - want[label]) for label in want]
        top_fp32, top_quantized = max(want, key=want.get), max(got, key=got.get)
        strict += top_quantized == top_fp32
        agree += want[top_quantized] >= want[top_fp32] - TIE_MARGIN
    return AgreementReport(
        requests=len(fp32), scores=len(deltas), max_abs_delta=float(max(deltas)),
        mean_abs_delta=float(np.mean(deltas)), top1_agreement=agree / len(fp32), top1_strict=strict / len(fp32),
        thresholds=thresholds, precision=precision,
    )


# what to export instead when the gate refuses a precision
FALLBACK = {"int8": "FP32 (the default)", "fp8": "FP16 (the GPU profiles' default)"}


def enforce(report: AgreementReport) -> None:
    failed = report.failures()
    if failed:
        raise AccuracyGateError(
            f"{report.precision.upper()} accuracy gate failed ({'; '.join(failed)}): {report}. Export "
            f"{FALLBACK[report.precision]} instead, or check on your own texts: python -m export --model ... "
            f"--precision {report.precision} --validate-only --texts FILE")


def read_texts_and_label_sets(texts_file: Path | None, labels: list[str] | None) -> tuple[list[str], list[list[str]]]:
    """The gate's texts and label sets: a workload-format JSON file ({"texts": [...], "label_sets": [[...]]}),
    or a text file with one text per line; label sets from `labels` ("a,b,c" each), else from the JSON
    file, else from the shipped workload."""
    path = texts_file or WORKLOAD
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"--texts {path}: cannot read it ({exc})") from None
    label_sets = None
    if path.suffix == ".json":
        try:
            data = json.loads(content)
            texts, label_sets = list(data["texts"]), data.get("label_sets")
        except (ValueError, KeyError, TypeError) as exc:
            raise ExportError(f"--texts {path}: not a workload JSON with a 'texts' list ({exc})") from None
    else:
        texts = [line.strip() for line in content.splitlines() if line.strip()]
    if not texts:
        raise ExportError(f"--texts {path}: no texts in it")
    try:
        if labels:
            label_sets = [parse_labels([spec]) for spec in labels]
        elif label_sets is None:
            label_sets = json.loads(WORKLOAD.read_text(encoding="utf-8"))["label_sets"]
    except InputError as exc:
        raise ExportError(f"--labels: {exc}") from None
    return texts, [list(dict.fromkeys(labels)) for labels in label_sets]


def gate_requests(texts: list[str], label_sets: list[list[str]], templates: tuple[str, ...],
                  count: int = DEFAULT_REQUESTS, seed: int = 0) -> list[GateRequest]:
    """A fixed sample (seeded) of the texts x label sets, each with a template in turn."""
    combinations = [(text, tuple(labels)) for text in texts for labels in label_sets]
    if count < len(combinations):
        combinations = random.Random(seed).sample(combinations, count)
    return [GateRequest(text, labels, templates[i % len(templates)]) for i, (text, labels) in enumerate(combinations)]


Runner = Callable[[dict[str, np.ndarray]], np.ndarray]


def answers(run: Runner, preprocessor: Preprocessor, settings: ScoringSettings,
            requests: list[GateRequest]) -> list[Answer]:
    """Each request as the server answers it: preprocess, one encoder run, score."""
    result = []
    for request in requests:
        try:
            prepared = preprocessor.prepare(request.text.encode(), [label.encode() for label in request.labels],
                                            request.template.encode())
        except InputError as exc:
            raise ExportError(f"gate request {request.text[:40]!r} is refused by the preprocess: {exc}") from None
        labels, scores = score_labels(settings, run(prepared.encoded.as_dict(settings.encoder_inputs)), prepared.labels,
                                      prepared.multi_label)
        result.append({label: float(score) for label, score in zip(labels, scores)})
    return result
