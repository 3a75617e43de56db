"""Load a checkpoint (ModelScope layout, Hugging Face layout, sentence-transformers layout, or hub id).

Everything downstream sees one ``LoadedCheckpoint``: an eval-mode torch module
with the encoder's named inputs and one named output, plus what the scoring and
the tokenizer need to know.

Hugging Face NLI checkpoints follow transformers' ZeroShotClassificationPipeline
(transformers/pipelines/zero_shot_classification.py): the entailment index is the
first ``label2id`` key starting with "entail" (any case), the contradiction index
is derived from it (``-1 if entailment_id == 0 else 0``), the model gets the inputs
its tokenizer produces (``model_input_names``), and pairs are truncated at the
tokenizer's ``model_max_length``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import torch
from transformers.utils import logging as hf_logging

from export.errors import CheckpointError
from export.gliclass import is_gliclass, load_gliclass_module
from export.hub import resolve_directory
from export.tokenizer import TokenizerFacts, bert_vocab_facts, tokenizer_facts
from zsc_server.encoder_limits import EncoderLimits
from zsc_server.label_prompt import LABEL_MARKER
from zsc_server.settings import ENCODER_INPUTS, ScoringMode

hf_logging.set_verbosity_error()  # our one-line summaries replace transformers' per-key load report
hf_logging.disable_progress_bar()

BERT_MODEL_TYPES = {"bert", "structbert"}
# Encoder families whose sequence classifiers (and sentence-transformers encoders) export to ONNX and are
# tested against transformers' pipeline: the hub checkpoints each stands for are listed in docs/models-and-export.md.
HF_MODEL_TYPES = {"bert", "roberta", "xlm-roberta", "deberta-v2", "bart", "electra", "modernbert"}
SUPPORTED_MODEL_TYPES = HF_MODEL_TYPES | {"structbert"}
# Learned absolute positions offset by padding_idx + 1: 514 embeddings hold 512 tokens.
PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta"}
# ModelScope's zero-shot pipeline hard-codes these for StructBERT NLI checkpoints.
STRUCTBERT_ENTAILMENT, STRUCTBERT_CONTRADICTION = 0, 2
# transformers' pipeline default; ModelScope's is '{}' (ModelScope and sentence-transformers checkpoints)
HF_TEMPLATE, MODELSCOPE_TEMPLATE = "This example is {}.", "{}"
LABEL_AS_SENT = "{}"  # GLiClass: the label itself goes into the prompt


@dataclasses.dataclass
class LoadedCheckpoint:
    source: str  # what the user asked for
    directory: Path
    layout: str  # "modelscope", "huggingface", "sentence-transformers"
    mode: ScoringMode
    module: torch.nn.Module  # forward(*inputs in input_names order) -> output
    output_name: str  # "logits" or "sentence_embedding"
    config: dict
    tokenizer: TokenizerFacts
    entailment_index: int = STRUCTBERT_ENTAILMENT
    contradiction_index: int = STRUCTBERT_CONTRADICTION
    default_template: str = MODELSCOPE_TEMPLATE
    # the longest pair the model takes: its positions, and the tokenizer's model_max_length
    max_length_limit: int = 512
    labels_per_row: int = 0  # GLiClass: the label slots of one encoder row
    prompt_first: bool = False  # GLiClass: the labels before the text

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.module.input_names

    @property
    def model_type(self) -> str:
        return self.module.model.config.model_type

    def encoder_limits(self, max_length: int) -> EncoderLimits:
        """What a request to the served encoder may hold: `max_length` tokens per row, ids its embeddings
        have rows for."""
        model = self.module.model
        base = getattr(model, "base_model", model)
        type_embeddings = getattr(getattr(base, "embeddings", None), "token_type_embeddings", None)
        return EncoderLimits(max_sequence_length=max_length,
                             vocab_size=int(model.get_input_embeddings().num_embeddings),
                             type_vocab_size=int(type_embeddings.num_embeddings) if type_embeddings is not None else 1)


class EncoderOutput(torch.nn.Module):
    """Base of the exported modules: positional inputs named by `input_names` (ONNX input order)."""

    def __init__(self, model: torch.nn.Module, input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def named(self, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        return dict(zip(self.input_names, inputs))


class NliLogits(EncoderOutput):
    """Sequence-classification model -> logits."""

    def forward(self, *inputs):
        return self.model(**self.named(inputs)).logits


class BartNliLogits(EncoderOutput):
    """BartForSequenceClassification's logits, from the decoder state at each row's last </s>.

    transformers gathers every </s> of the batch and reshapes, which needs the same number in every row;
    here a label containing '</s>' (the tokenizer makes it the special token) changes nothing for the
    other rows of a dynamic batch. For one pair, as the pipeline runs it, both pick the same state."""

    def forward(self, input_ids, attention_mask):
        hidden = self.model.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        eos = input_ids.eq(self.model.config.eos_token_id)
        last_eos = torch.where(eos, positions, torch.zeros_like(positions)).amax(dim=1)
        index = last_eos.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        return self.model.classification_head(hidden.gather(1, index).squeeze(1))


class PooledEmbedding(EncoderOutput):
    """Encoder + sentence-transformers pooling: mask-weighted mean, or the first token. A Normalize module
    is left out: the server scores by cosine, which L2 normalization does not change."""

    def __init__(self, model: torch.nn.Module, input_names: tuple[str, ...], pooling: str) -> None:
        super().__init__(model, input_names)
        self.pooling = pooling

    def forward(self, *inputs):
        named = self.named(inputs)
        hidden = self.model(**named).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = named["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return pooled


def load_checkpoint(model: str, cache_dir: str | None = None, labels_per_row: int | None = None) -> LoadedCheckpoint:
    """labels_per_row: GLiClass only, the labels one encoder row holds (default: the checkpoint's
    max_num_classes)."""
    directory = resolve_directory(model, cache_dir)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory}: no config.json (not a ModelScope or Hugging Face checkpoint)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if is_gliclass(config):
        return _load_gliclass(model, directory, config, labels_per_row)
    if labels_per_row is not None:
        raise CheckpointError(f"{directory}: labels per row are for GLiClass checkpoints; this one is "
                              f"{config.get('model_type')!r}, which scores one label per row")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{directory}: model_type {model_type!r} is not supported; "
            f"supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))}"
        )
    if (directory / "modules.json").is_file():
        return _load_sentence_transformers(model, directory)
    if model_type == "structbert" or (directory / "configuration.json").is_file():
        return _load_modelscope(model, directory, config)
    return _load_huggingface(model, directory, config)


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
        module=NliLogits(model, ENCODER_INPUTS).eval(), output_name="logits", config=config,
        tokenizer=bert_vocab_facts(directory), max_length_limit=position_limit(model.config),
    )


def _canonical_key(key: str) -> str:
    """Old BERT checkpoints name LayerNorm parameters gamma/beta; some prefix keys with 'module.'."""
    key = key.removeprefix("module.")
    if key.endswith("LayerNorm.gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith("LayerNorm.beta"):
        return key[: -len("beta")] + "bias"
    return key


def entailment_index(label2id: dict, directory: Path) -> int:
    """The pipeline's rule: the first label2id key that starts with 'entail', in any case."""
    for label, index in label2id.items():
        if label.lower().startswith("entail"):
            return int(index)
    raise CheckpointError(
        f"{directory}: config.label2id has no label starting with 'entail' ({sorted(label2id)}); "
        "not an NLI checkpoint"
    )


def contradiction_index(entailment: int, num_labels: int) -> int:
    """As the pipeline derives it (``-1 if entailment_id == 0 else 0``), not looked up: for a 2-class
    entailment / not_entailment model it is the other class."""
    return num_labels - 1 if entailment == 0 else 0


def position_limit(config) -> int:
    """The longest sequence the model's position embeddings take."""
    limit = int(config.max_position_embeddings)
    if config.model_type in PADDING_OFFSET_POSITIONS:
        limit -= int(config.pad_token_id) + 1
    return limit


def model_inputs(model: torch.nn.Module, tokenizer: TokenizerFacts) -> tuple[str, ...]:
    """The inputs the pipeline feeds the model (the tokenizer's model_input_names the forward takes),
    less token_type_ids where the model has no segment embedding to read them with (DeBERTa-v3's
    type_vocab_size 0; RoBERTa's 1 only ever sees zeros)."""
    accepted = inspect.signature(model.forward).parameters
    names = [name for name in ENCODER_INPUTS if name in accepted and name in tokenizer.model_input_names]
    if "token_type_ids" in names and int(getattr(model.config, "type_vocab_size", 0) or 0) < 2:
        names.remove("token_type_ids")
    if names[:2] != ["input_ids", "attention_mask"]:
        raise CheckpointError(f"{model.config.model_type}: the tokenizer's inputs {tokenizer.model_input_names} "
                              "lack input_ids / attention_mask")
    return tuple(names)


def _max_length_limit(config, tokenizer: TokenizerFacts) -> int:
    """The pipeline truncates at the tokenizer's model_max_length; where that is unset (transformers'
    huge placeholder) it does not truncate at all, and the model's positions are the limit."""
    return min(position_limit(config), tokenizer.model_max_length or position_limit(config))


def _load_huggingface(source: str, directory: Path, config: dict) -> LoadedCheckpoint:
    from transformers import AutoModelForSequenceClassification

    if config.get("model_type") not in HF_MODEL_TYPES:
        raise CheckpointError(f"{directory}: model_type {config.get('model_type')!r} in Hugging Face layout is "
                              f"not supported; supported: {', '.join(sorted(HF_MODEL_TYPES))}")
    model = AutoModelForSequenceClassification.from_pretrained(directory, attn_implementation="eager")
    entailment = entailment_index(model.config.label2id, directory)  # as the pipeline reads it
    num_labels = int(model.config.num_labels)
    if num_labels < 2 or entailment >= num_labels:
        raise CheckpointError(f"{directory}: an NLI head needs 2 or 3 labels including entailment; "
                              f"this one has {num_labels}")
    tokenizer = tokenizer_facts(directory)
    inputs = model_inputs(model, tokenizer)
    wrapper = BartNliLogits if model.config.model_type == "bart" else NliLogits
    return LoadedCheckpoint(
        source=source, directory=directory, layout="huggingface", mode=ScoringMode.NLI,
        module=wrapper(model, inputs).eval(), output_name="logits", config=config, tokenizer=tokenizer,
        entailment_index=entailment, contradiction_index=contradiction_index(entailment, num_labels),
        default_template=HF_TEMPLATE, max_length_limit=_max_length_limit(model.config, tokenizer),
    )


def _load_gliclass(source: str, directory: Path, config: dict, labels_per_row: int | None) -> LoadedCheckpoint:
    import transformers

    if labels_per_row is not None and labels_per_row < 1:
        raise CheckpointError(f"labels per row must be at least 1, got {labels_per_row}")
    if int(transformers.__version__.split(".")[0]) < 5:
        # gliclass runs on transformers 5, which tokenizes some families its own way (export/tokenizer.py)
        raise CheckpointError(f"{directory}: GLiClass exports need transformers >= 5, as the gliclass package "
                              f"does; this environment has {transformers.__version__}")
    module, served = load_gliclass_module(directory, config, labels_per_row)
    tokenizer = tokenizer_facts(directory)
    marker = tokenizer.loaded.convert_tokens_to_ids(LABEL_MARKER)
    if marker != int(served["class_token_index"]):
        raise CheckpointError(f"{directory}: the tokenizer's {LABEL_MARKER} is id {marker}, config.json's "
                              f"class_token_index {served['class_token_index']}: the model would find no label")
    return LoadedCheckpoint(
        source=source, directory=directory, layout="gliclass", mode=ScoringMode.GLICLASS, module=module,
        output_name="logits", config=served, tokenizer=tokenizer, default_template=LABEL_AS_SENT,
        max_length_limit=_max_length_limit(module.model.config, tokenizer), labels_per_row=module.labels_per_row,
        prompt_first=bool(served["prompt_first"]),
    )


def _sentence_transformers_modules(directory: Path) -> tuple[Path, str, int | None]:
    """modules.json -> (the Transformer module's directory, pooling 'mean' or 'cls', the max_seq_length
    sentence-transformers truncates at)."""
    modules = json.loads((directory / "modules.json").read_text(encoding="utf-8"))
    transformer, pooling = directory, "mean"
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        path = directory / module.get("path", "")
        if kind == "Transformer":
            transformer = path
        elif kind == "Pooling":
            pooling = _pooling_mode(path / "config.json")
        elif kind != "Normalize":  # cosine scores are the same with or without it
            raise CheckpointError(f"{directory}/modules.json: module {module.get('type')!r} is not supported "
                                  "(Transformer, Pooling with cls or mean tokens, Normalize)")
    settings = _json_file(transformer / "sentence_bert_config.json")
    if settings.get("do_lower_case"):
        raise CheckpointError(f"{transformer}/sentence_bert_config.json: do_lower_case (sentence-transformers "
                              "lowercases the text itself) is not supported")
    if _json_file(directory / "config_sentence_transformers.json").get("default_prompt_name"):
        raise CheckpointError(f"{directory}/config_sentence_transformers.json: a default prompt (which "
                              "sentence-transformers puts before every text it encodes) is not supported")
    return transformer, pooling, settings.get("max_seq_length")


def _json_file(path: Path) -> dict:
    """A JSON file's object, {} where there is no such file."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _pooling_mode(path: Path) -> str:
    if not path.is_file():
        return "mean"
    modes = {key.removeprefix("pooling_mode_"): value
             for key, value in json.loads(path.read_text(encoding="utf-8")).items()
             if key.startswith("pooling_mode_") and value}
    supported = {"cls_token": "cls", "mean_tokens": "mean"}
    if len(modes) != 1 or next(iter(modes)) not in supported:
        raise CheckpointError(f"{path}: pooling {sorted(modes)} is not supported; one of cls_token or "
                              "mean_tokens")
    return supported[next(iter(modes))]


def _load_sentence_transformers(source: str, directory: Path) -> LoadedCheckpoint:
    from transformers import AutoConfig, AutoModel

    transformer, pooling, max_seq_length = _sentence_transformers_modules(directory)
    model_config = AutoConfig.from_pretrained(transformer)
    if model_config.model_type not in HF_MODEL_TYPES:
        raise CheckpointError(f"{transformer}: model_type {model_config.model_type!r} is not supported; "
                              f"supported: {', '.join(sorted(HF_MODEL_TYPES))}")
    extra = {"add_pooling_layer": False} if model_config.model_type in BERT_MODEL_TYPES else {}
    model = AutoModel.from_pretrained(transformer, attn_implementation="eager", **extra)
    tokenizer = tokenizer_facts(transformer)
    limit = _max_length_limit(model.config, tokenizer)  # sentence-transformers truncates at max_seq_length
    return LoadedCheckpoint(
        source=source, directory=transformer, layout="sentence-transformers", mode=ScoringMode.EMBEDDING,
        module=PooledEmbedding(model, model_inputs(model, tokenizer), pooling).eval(),
        output_name="sentence_embedding", config=model_config.to_dict(), tokenizer=tokenizer,
        max_length_limit=min(limit, int(max_seq_length or limit)),
    )
