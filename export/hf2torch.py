"""Hugging Face BERT (as loaded by export.checkpoint) -> `model.pt` for the plain-torch encoder
(zsc_server.torch_bert): the model's shape and its FP32 weights in one file, no code, no transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.checkpoint import LoadedCheckpoint
from export.errors import ExportError
from zsc_server.batching_policy import DEFAULT_TORCH_LAYOUT
from zsc_server.settings import ScoringMode
from zsc_server.torch_bert import BertShape, save_plain_bert

SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "hidden_act")


def require_plain_bert(ckpt: LoadedCheckpoint) -> None:
    """python-torch runs BERT only: refuse other families in one line, before any work is done."""
    if ckpt.mode is ScoringMode.GLICLASS:
        raise ExportError("the python-torch runtime runs BERT NLI and embedding encoders, not GLiClass's head: use "
                          "--runtime python-ort, python-ov, onnxruntime or tensorrt")
    model_type = getattr(ckpt.module.model.config, "model_type", "bert")
    if model_type not in ("bert", "structbert"):
        raise ExportError(f"the python-torch runtime runs BERT-architecture encoders (bert, structbert); this "
                          f"checkpoint is {model_type!r}: use --runtime python-ort, onnxruntime or tensorrt")


def plain_bert_shape(ckpt: LoadedCheckpoint) -> BertShape:
    require_plain_bert(ckpt)
    config = ckpt.module.model.config
    fields = {name: getattr(config, name) for name in SHAPE_FIELDS}
    if ckpt.mode is ScoringMode.NLI:
        return BertShape(**fields, num_labels=int(config.num_labels), head="classifier")
    return BertShape(**fields, head="mean_pool")


def export_plain_torch(ckpt: LoadedCheckpoint, path: Path) -> Path:
    try:
        shape = plain_bert_shape(ckpt)
    except ValueError as exc:  # e.g. an activation the plain model does not implement
        raise ExportError(str(exc)) from None
    state = {key.removeprefix("bert."): value for key, value in ckpt.module.model.state_dict().items()}
    try:
        save_plain_bert(path, shape, state)
    except KeyError as exc:
        raise ExportError(str(exc)) from None
    return path


def plain_torch_runner(path: Path, layout: str = DEFAULT_TORCH_LAYOUT, device: str = "cpu", precision: str = "fp32"):
    """For export.validate and the FP8 accuracy gate: the saved model, loaded and run as the server runs it (on
    a CPU instance by default: FP32, in `layout`). What cannot run here (an FP8 or packed model on a GPU without
    the kernels) is an ExportError naming why."""
    from zsc_server.torch_encoder import TorchEncoder

    try:
        encoder = TorchEncoder(str(path), device=device, precision=precision, layout=layout)
    except ValueError as exc:
        raise ExportError(str(exc)) from None

    def run(feeds: dict) -> np.ndarray:
        [rows] = encoder.run_batch([feeds])
        return rows
    return run
