"""Load a GLiClass uni-encoder checkpoint (Knowledgator's `gliclass` package) as one exportable module.

The package itself is not needed (nor installed beside the server: it wants numpy >= 2, which the serving stub
cannot load): the backbone is the checkpoint's encoder_config built with transformers, and the
head, the few layers gliclass/model.py adds on top of it, is written out below with the same parameter
names, so the checkpoint's weights load into it unchanged. One row in, one logit per label slot out:

    backbone -> each <<LABEL>> marker's state (or its label's tokens, averaged) and the first token's state
             -> a projector each (Linear, activation, Linear) -> [normalized, scaled] -> scorer -> logits

Served: architecture_type uni-encoder on the backbones tested against the package (BACKBONES); scorers simple
(dot), weighted-dot and mlp, which score each label on its own; text pooling first (the first token) or avg
(over the row's tokens); class_token_pooling first or average. Anything else is refused by name before any
work is done (tests/integration/test_gliclass.py holds the answers to the package's pipeline).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from export.errors import CheckpointError

GLICLASS_MODEL_TYPE = "GLiClass"
BACKBONE_PREFIX, HEAD_PREFIX = "model.encoder_model.", "model."
SERVED = {
    "architecture_type": ("uni-encoder",),
    "scorer_type": ("simple", "weighted-dot", "mlp"),
    "pooling_strategy": ("first", "avg"),
    "class_token_pooling": ("first", "average"),
}
# Settings whose other values change the forward pass in ways not served here: the one value served.
ONLY_SERVED_VALUE = {"use_lstm": False, "squeeze_layers": False, "use_segment_embeddings": False,
                     "extract_text_features": False, "use_calibrator": False, "encoder_layer_id": -1,
                     "multimodal": False}
# encoder_config.model_type values served: those the parity tests build. gliclass also runs decoders (through
# LLM2Vec's bidirectional models, whose weights would load into a causal AutoModel unnoticed) and T5 encoders.
BACKBONES = ("bert", "deberta-v2", "modernbert")
# The defaults of GLiClassModelConfig, for keys a saved config.json leaves out.
DEFAULTS = {"architecture_type": "uni-encoder", "scorer_type": "simple", "pooling_strategy": "first",
            "class_token_pooling": "first", "embed_class_token": True, "normalize_features": False,
            "prompt_first": False, "projector_hidden_act": "gelu", "max_num_classes": 25,
            "logit_scale_init_value": 2.6592, **ONLY_SERVED_VALUE}
ENCODER_DEFAULT_TYPE = "deberta-v2"  # GLiClassModelConfig's, for an encoder_config without model_type
EPSILON = 1e-8  # gliclass's, added to the norms of normalized features
MLP_WIDTH = 256  # gliclass's MLPScorer never receives the config's scorer_mlp_hidden_size


def is_gliclass(config: dict) -> bool:
    return config.get("model_type") == GLICLASS_MODEL_TYPE


def served_config(config: dict, directory: Path) -> dict:
    """config.json with gliclass's defaults filled in; raises CheckpointError for what is not served."""
    merged = {**DEFAULTS, **config}
    for key, served in SERVED.items():
        if merged[key] not in served:
            raise CheckpointError(f"{directory}: GLiClass {key} {merged[key]!r} is not served; served: "
                                  f"{', '.join(served)} (bi-encoder, encoder-decoder and decoder models, and "
                                  "scorers that mix labels, are not)")
    for key, served in ONLY_SERVED_VALUE.items():
        if merged[key] != served:
            raise CheckpointError(f"{directory}: GLiClass {key}={merged[key]!r} is not served (only {served!r})")
    for key in ("class_token_index", "encoder_config"):
        if key not in config:
            raise CheckpointError(f"{directory}: a GLiClass config.json without {key}")
    return merged


class Projector(nn.Module):
    """gliclass.layers.FeaturesProjector (its dropout is a no-op in eval)."""

    def __init__(self, hidden: int, inner: int, activation: str) -> None:
        from transformers.activations import ACT2FN

        super().__init__()
        self.linear_1, self.act, self.linear_2 = nn.Linear(hidden, inner), ACT2FN[activation], nn.Linear(inner, hidden)

    def forward(self, features):
        return self.linear_2(self.act(self.linear_1(features)))


class DotScorer(nn.Module):
    def forward(self, text, labels):
        return torch.einsum("bd,bkd->bk", text, labels)


class WeightedDotScorer(nn.Module):
    """gliclass.scorers.ScorerWeightedDot: [text, label, text * label] through an MLP."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj_text, self.proj_label = nn.Linear(hidden, hidden * 2), nn.Linear(hidden, hidden * 2)
        self.out_mlp = nn.Sequential(nn.Linear(hidden * 3, hidden * 4), nn.Dropout(0.0), nn.ReLU(),
                                     nn.Linear(hidden * 4, 1))

    def forward(self, text, labels):
        slots = labels.shape[1]
        text_a, text_b = self.proj_text(text).unsqueeze(1).expand(-1, slots, -1).chunk(2, dim=-1)
        label_a, label_b = self.proj_label(labels).chunk(2, dim=-1)
        return self.out_mlp(torch.cat([text_a, label_a, text_b * label_b], dim=-1)).squeeze(-1)


class MlpScorer(nn.Module):
    """gliclass.scorers.MLPScorer: [text, label] through an MLP (its width read from the weights)."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden * 2, width), nn.ReLU(), nn.Linear(width, width // 2), nn.ReLU(),
                                 nn.Linear(width // 2, 1))

    def forward(self, text, labels):
        text = text.unsqueeze(1).expand(-1, labels.shape[1], -1)
        return self.mlp(torch.cat([text, labels], dim=-1)).squeeze(-1)


class GliclassLogits(nn.Module):
    """(input_ids, attention_mask) -> logits [rows, labels_per_row]: slot k holds the k-th label of the row
    (slots past the row's labels hold what an empty slot scores, which the postprocess never reads)."""

    def __init__(self, backbone: nn.Module, config: dict, labels_per_row: int, inner: int,
                 mlp_width: int = MLP_WIDTH) -> None:
        """inner: the projectors' width (config.hidden_size); mlp_width: the mlp scorer's."""
        super().__init__()
        self.model, self.input_names = backbone, ("input_ids", "attention_mask")
        self.labels_per_row, self.config = labels_per_row, config
        hidden = backbone.config.hidden_size
        self.text_projector = Projector(hidden, inner, config["projector_hidden_act"])
        self.classes_projector = Projector(hidden, inner, config["projector_hidden_act"])
        scorer = config["scorer_type"]
        self.scorer = (DotScorer() if scorer == "simple" else WeightedDotScorer(hidden) if scorer == "weighted-dot"
                       else MlpScorer(hidden, mlp_width))
        self.logit_scale = nn.Parameter(torch.tensor(float(config["logit_scale_init_value"])))

    def forward(self, input_ids, attention_mask):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask)[0]
        text = self.text_projector(self.pool_text(hidden, attention_mask))
        labels = self.classes_projector(self.label_states(hidden, input_ids, attention_mask))
        if self.config["normalize_features"]:
            text = text / (text.norm(p=2, dim=-1, keepdim=True) + EPSILON)
            labels = labels / (labels.norm(p=2, dim=-1, keepdim=True) + EPSILON)
        logits = self.scorer(text, labels)
        return logits * self.logit_scale if self.config["normalize_features"] else logits

    def pool_text(self, hidden, attention_mask):
        if self.config["pooling_strategy"] == "first":
            return hidden[:, 0]
        # gliclass averages every position of its batch, padded to the longest row: over one row, its tokens
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1)

    def label_states(self, hidden, input_ids, attention_mask):
        """[rows, labels_per_row, hidden]: gliclass's _extract_class_features_first / _averaged."""
        markers = input_ids == int(self.config["class_token_index"])
        count = markers.long().cumsum(dim=-1).unsqueeze(1)  # markers up to each position
        slot = torch.arange(self.labels_per_row, device=input_ids.device).view(1, -1, 1)
        if self.config["class_token_pooling"] == "first":
            select = markers.unsqueeze(1) & (count - 1 == slot)
            if not self.config["embed_class_token"]:  # the token after each marker
                select = torch.cat([torch.zeros_like(select[:, :, :1]), select[:, :, :-1]], dim=-1)
            return torch.einsum("bks,bsd->bkd", select.to(hidden.dtype), hidden)
        span = (count == slot + 1) & attention_mask.unsqueeze(1).bool()  # a marker up to the next one
        if not self.config["embed_class_token"]:
            span = span & ~markers.unsqueeze(1)
        span = span.to(hidden.dtype)
        return torch.einsum("bks,bsd->bkd", span, hidden) / span.sum(dim=-1, keepdim=True).clamp(min=1)


def checkpoint_state(module: GliclassLogits) -> dict[str, torch.Tensor]:
    """The module's weights under the names GLiClassModel.save_pretrained gives them."""
    return {_checkpoint_key(key): value for key, value in module.state_dict().items()}


def read_state(directory: Path) -> dict[str, torch.Tensor]:
    safetensors, pickled = directory / "model.safetensors", directory / "pytorch_model.bin"
    if safetensors.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors))
    if pickled.is_file():
        return torch.load(pickled, map_location="cpu", weights_only=True)
    raise CheckpointError(f"{directory}: no model.safetensors or pytorch_model.bin")


def load_gliclass_module(directory: Path, config: dict, labels_per_row: int | None) -> tuple[GliclassLogits, dict]:
    """(the module, the served config: gliclass's defaults filled in)."""
    from transformers import AutoConfig, AutoModel
    from transformers.activations import ACT2FN

    config = served_config(config, directory)
    encoder = dict(config["encoder_config"])
    encoder_type = encoder.pop("model_type", ENCODER_DEFAULT_TYPE)
    if encoder_type not in BACKBONES:
        raise CheckpointError(f"{directory}: GLiClass on a {encoder_type!r} backbone (encoder_config.model_type) is "
                              f"not served; served: {', '.join(BACKBONES)}")
    if config["projector_hidden_act"] not in ACT2FN:
        raise CheckpointError(f"{directory}: GLiClass projector_hidden_act {config['projector_hidden_act']!r} is "
                              "not an activation transformers knows")
    state = read_state(directory)
    if "model.text_projector.linear_1.weight" not in state:
        raise CheckpointError(f"{directory}: no GLiClass head weights ({HEAD_PREFIX}text_projector...)")
    backbone = AutoModel.from_config(AutoConfig.for_model(encoder_type, **encoder),
                                     attn_implementation="eager")  # plain attention exports cleanly to ONNX
    embeddings = next(f"{BACKBONE_PREFIX}{name}" for name, weight in backbone.named_parameters()
                      if weight is backbone.get_input_embeddings().weight)
    if embeddings in state and state[embeddings].shape[0] != backbone.get_input_embeddings().num_embeddings:
        backbone.resize_token_embeddings(state[embeddings].shape[0])  # the markers the tokenizer added
    mlp = state.get("model.scorer.mlp.0.weight")
    module = GliclassLogits(backbone, config, labels_per_row or int(config["max_num_classes"]),
                            inner=state["model.text_projector.linear_1.weight"].shape[0],
                            mlp_width=MLP_WIDTH if mlp is None else mlp.shape[0])
    expected = set(checkpoint_state(module))  # the checkpoint's names of the module's weights
    try:
        loaded = module.load_state_dict({_module_key(key): value for key, value in state.items() if key in expected},
                                        strict=False)
    except RuntimeError as exc:  # a weight of another shape than the config builds
        reason = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CheckpointError(f"{directory}: GLiClass weights do not fit its config.json: {reason}") from None
    missing = [key for key in loaded.missing_keys if not key.endswith("position_ids")]
    if missing:
        raise CheckpointError(f"{directory}: {len(missing)} GLiClass weights missing, e.g. "
                              f"{[_checkpoint_key(key) for key in missing[:3]]}")
    return module.eval(), config


def _module_key(key: str) -> str:
    """A checkpoint's weight name as GliclassLogits names it (the inverse of _checkpoint_key)."""
    return "model." + key.removeprefix(BACKBONE_PREFIX) if key.startswith(BACKBONE_PREFIX) \
        else key.removeprefix(HEAD_PREFIX)


def _checkpoint_key(key: str) -> str:
    """A GliclassLogits weight's name as GLiClassModel.save_pretrained writes it."""
    return BACKBONE_PREFIX + key.removeprefix("model.") if key.startswith("model.") else HEAD_PREFIX + key
