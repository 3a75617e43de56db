"""Scoring settings shared by the export step (writer) and the Python models (reader).

Export writes them into the ``parameters`` of the preprocess / postprocess
``config.pbtxt``; the models read them back from ``args["model_config"]``. One
dataclass so that the two sides cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import enum
import json

from zsc_server.batching_policy import DEFAULT_BUCKETS


class ScoringMode(str, enum.Enum):
    """How label scores are computed from the encoder output."""

    NLI = "nli"  # cross-encoder: (text, hypothesis) pairs -> entailment logits
    EMBEDDING = "embedding"  # bi-encoder: cosine(text embedding, hypothesis embedding)
    # GLiClass uni-encoder: the labels and the text in one sequence, one logit per label (zsc_server.label_prompt)
    GLICLASS = "gliclass"


# The encoder inputs BERT takes; other families take a subset (RoBERTa, XLM-R, BART, DeBERTa-v3 and
# ModernBERT no token_type_ids). Export writes the ones its ONNX graph declares into `encoder_inputs`.
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

def sequence_buckets(max_length: int, candidates: tuple[int, ...] = DEFAULT_BUCKETS) -> tuple[int, ...]:
    """Padded sequence lengths the preprocess may emit: candidates below max_length, then max_length.

    A small, fixed set of shapes lets the dynamic batcher merge requests (it only
    batches tensors of equal shape) and lets TensorRT use one profile per bucket.
    """
    if max_length < 8:
        raise ValueError(f"max_length must be at least 8, got {max_length}")
    return tuple(b for b in candidates if b < max_length) + (max_length,)


@dataclasses.dataclass(frozen=True)
class ScoringSettings:
    mode: ScoringMode = ScoringMode.NLI
    max_length: int = 128
    buckets: tuple[int, ...] = ()
    default_template: str = "{}"
    entailment_index: int = 0
    contradiction_index: int = 2
    max_labels: int = 256
    max_text_bytes: int = 65536
    # All labels together, checked before decoding: without it one 10 MB label kept a preprocess
    # instance busy for 20 s tokenizing a hypothesis that could never fit max_length.
    max_labels_bytes: int = 65536
    max_template_bytes: int = 1024
    # A text longer than max_length: 1 truncates it (as the reference pipelines do); more scores it as up to this
    # many overlapping windows, each label by its best window (zsc_server.postprocess).
    max_windows: int = 1
    encoder_inputs: tuple[str, ...] = ENCODER_INPUTS  # what the preprocess sends the encoder, in order
    # GLiClass: the labels one encoder row holds (more labels take more rows), and whether they come before
    # the text (the checkpoint's prompt_first)
    labels_per_row: int = 0
    prompt_first: bool = False
    # the encoder rows one request may use (its windows x labels): the encoder's max batch; 0: max_labels + 1
    max_rows: int = 0

    @property
    def rows_per_request(self) -> int:
        return self.max_rows or self.max_labels + 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ScoringMode(self.mode))
        if not self.buckets:
            object.__setattr__(self, "buckets", sequence_buckets(self.max_length))
        if list(self.buckets) != sorted(set(self.buckets)) or self.buckets[0] < 1:
            raise ValueError(f"buckets must be distinct positive lengths in ascending order: {self.buckets}")
        if self.buckets[-1] != self.max_length:
            raise ValueError(f"the last bucket must equal max_length ({self.max_length}): {self.buckets}")
        if "{}" not in self.default_template:
            raise ValueError(f"default_template must contain '{{}}': {self.default_template!r}")
        if self.entailment_index == self.contradiction_index:
            raise ValueError("entailment_index and contradiction_index must differ")
        if self.max_labels < 1:
            raise ValueError("max_labels must be at least 1")
        if self.max_windows < 1:
            raise ValueError("max_windows must be at least 1 (1: truncate long texts)")
        if self.mode is ScoringMode.GLICLASS and (self.labels_per_row < 1 or self.max_windows != 1):
            raise ValueError(f"GLiClass scoring needs labels_per_row >= 1 and max_windows 1 (labels_per_row "
                             f"{self.labels_per_row}, max_windows {self.max_windows})")
        if "input_ids" not in self.encoder_inputs or not set(self.encoder_inputs) <= set(ENCODER_INPUTS):
            raise ValueError(f"encoder_inputs must include input_ids and be among {ENCODER_INPUTS}: "
                             f"{self.encoder_inputs}")

    def to_parameters(self) -> dict[str, str]:
        """As Triton config ``parameters`` (string values)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, ScoringMode):
                value = value.value
            out[field.name] = json.dumps(list(value)) if isinstance(value, tuple) else str(value)
        return out

    @classmethod
    def from_model_config(cls, model_config: dict) -> ScoringSettings:
        """From the parsed JSON model config a Python-backend model receives in ``initialize``."""
        params = {k: v["string_value"] for k, v in model_config.get("parameters", {}).items()}
        kwargs = {}
        for field in dataclasses.fields(cls):
            if field.name not in params:
                continue
            raw = params[field.name]
            if field.name == "buckets":
                kwargs[field.name] = tuple(int(x) for x in json.loads(raw))
            elif field.name == "encoder_inputs":
                kwargs[field.name] = tuple(json.loads(raw))
            elif field.type in ("int", int):
                kwargs[field.name] = int(raw)
            elif field.type in ("bool", bool):
                if raw not in ("True", "False"):
                    raise ValueError(f"{field.name} must be True or False, got {raw!r}")
                kwargs[field.name] = raw == "True"
            else:
                kwargs[field.name] = raw
        return cls(**kwargs)
