"""What an export takes: `ExportOptions`, whose defaults are the CLI's (export/cli.py reads them from here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from export import agreement
from export.errors import ExportError
from export.repository import Runtime
from export.torch2onnx import Precision
from zsc_server.batching_policy import (
    CPU_ROWS_PER_CALL,
    DEFAULT_TORCH_LAYOUT,
    LABEL_CACHE_MIB,
    MAX_QUEUE_SIZE,
    PREPROCESS_INSTANCES,
    REPLAY_OVERHEAD_TOKENS,
    TORCH_LAYOUTS,
)

MODEL_MAX_LENGTH = "model"  # max_length="model": as long as the model takes (the pipeline's truncation)
# max_length="auto": PAIR_MAX_LENGTH for NLI and embedding models (ample for customer-service messages, and
# fast); for GLiClass, whose labels share the row with the text, the model's limit up to GLICLASS_MAX_LENGTH
# (the gliclass pipeline's default)
AUTO_MAX_LENGTH, PAIR_MAX_LENGTH, GLICLASS_MAX_LENGTH = "auto", 128, 1024


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """One export: `export.pipeline.export_model(ExportOptions(model=...))`; `python -m export --help` says
    what each field does (the flag of the same name)."""

    model: str
    repository: Path = Path("model_repository")
    precision: Precision | None = None  # None: the GPU profile's, else fp32
    runtime: Runtime | None = None  # None: python-torch with a GPU profile, else python-ort
    gpu: str | None = "auto"  # a card of export.gpu_profiles.CARDS, "auto" (the visible GPU's), "none"
    torch_device: str = "gpu"
    torch_layout: str = DEFAULT_TORCH_LAYOUT  # python-torch: "padded" rows per sequence bucket, or "packed" tokens
    trt_workspace_gib: float = 4.0
    max_length: int | str = AUTO_MAX_LENGTH  # or MODEL_MAX_LENGTH, or a number of tokens
    buckets: str = "auto"
    template: str | None = None  # None: the checkpoint family's
    max_labels: int = 256
    max_text_bytes: int = 65536
    max_labels_bytes: int = 65536
    max_windows: int = 1  # texts over max_length: 1 truncates them, more scores them as overlapping windows
    labels_per_row: int | None = None  # GLiClass: labels in one encoder row; None: the checkpoint's max_num_classes
    queue_delay_us: int | None = None  # None: the GPU profile's, else CPU_QUEUE_DELAY_US
    replay_overhead_tokens: int = REPLAY_OVERHEAD_TOKENS
    encoder_instances: int | None = None  # None: the GPU profile's, else ENCODER_INSTANCES
    max_queue_size: int = MAX_QUEUE_SIZE
    queue_timeout_ms: str = "auto"
    admission_budget_ms: str = "auto"
    preprocess_instances: int = PREPROCESS_INSTANCES
    cpu_cores: int = 0
    rows_per_call: int = CPU_ROWS_PER_CALL
    label_cache_mb: float = LABEL_CACHE_MIB
    cache_dir: str | None = None
    texts: Path | None = None  # the INT8 accuracy gate's texts (None: loadtest/data/workload.json)
    labels: tuple[str, ...] | None = None  # its label sets
    gate_requests: int = agreement.DEFAULT_REQUESTS
    accuracy_gate: str = "enforce"
    validate_only: bool = False

    def __post_init__(self) -> None:
        # callers may name the enums by their values, as the flags do: precision="int8", runtime="python-ort"
        for name, kind in (("precision", Precision), ("runtime", Runtime)):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, kind(value))
        object.__setattr__(self, "repository", Path(self.repository))
        if self.texts is not None:
            object.__setattr__(self, "texts", Path(self.texts))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        self._check_bounds()

    def _check_bounds(self) -> None:
        """Numbers out of range, refused before any work (they would fail at the end of the export, or make a
        repository whose every request fails), named as their flags."""
        at_least = {1: ("max_labels", "max_text_bytes", "max_labels_bytes", "max_windows", "labels_per_row",
                        "encoder_instances", "preprocess_instances", "gate_requests"),
                    0: ("queue_delay_us", "replay_overhead_tokens", "max_queue_size", "cpu_cores", "rows_per_call",
                        "label_cache_mb", "trt_workspace_gib")}
        for least, names in at_least.items():
            for name in names:
                value = getattr(self, name)
                if value is not None and not value >= least:
                    raise ExportError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
        if isinstance(self.max_length, int) and self.max_length < 8:
            raise ExportError(f"--max-length must be at least 8 tokens, got {self.max_length}")
        if self.torch_layout not in TORCH_LAYOUTS:
            raise ExportError(f"--torch-layout must be one of {', '.join(TORCH_LAYOUTS)}, got {self.torch_layout!r}")
        if self.template is not None and "{}" not in self.template:
            raise ExportError(f"--template must contain '{{}}' where the label goes, got {self.template!r}")
        if self.queue_timeout_ms != "auto" and not (str(self.queue_timeout_ms).isdigit()
                                                    and int(self.queue_timeout_ms) >= 1):
            raise ExportError(f"--queue-timeout-ms must be auto or a whole number of ms (1 or more), "
                              f"got {self.queue_timeout_ms!r}")


DEFAULTS = ExportOptions(model="")
