"""Knowledgator's gliclass package as the reference for GLiClass checkpoints: JSON on stdin, JSON on stdout.

Runs in .venv-gliclass (`make setup-gliclass`: gliclass 0.1.21 needs numpy 2, which the main venv cannot
have) with the repository root on PYTHONPATH, started by tests/gliclass_checkpoints.py. Two jobs:
    stdin:  {"job": "write", "directory": DIR, "backbone": "bert" | "deberta-v3" | ..., "seed": N,
             "config": {GLiClassModelConfig field: value, ...}}
    stdout: {"directory": DIR, "weights": bool, "config": {config.json as saved}}
    stdin:  {"job": "classify", "model": DIR, "max_length": N,
             "cases": [{"text": ..., "labels": [...], "classification_type": "single-label" | "multi-label",
                        "labels_chunk_size": N (optional: the chunking pipeline), pipeline arguments...}, ...]}
    stdout: [{"scores": [...], "input_ids": [...], "forwards": [{"input_ids": [...], "logits": [...]}, ...]}, ...]
"scores": every label's score in the case's label order (not thresholded); "forwards": what each of the
pipeline's model calls received and returned (one per label chunk), "input_ids" the first one's.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from gliclass import (
    GLiClassModel,
    GLiClassModelConfig,
    ZeroShotClassificationPipeline,
    ZeroShotClassificationWithChunkingPipeline,
)
from transformers import AutoTokenizer

from tests.hf_checkpoints import FAMILIES, TOKENIZERS, backbone_config

# As gliclass's train.py: the tokens are added with add_tokens(special_tokens=True) right after the backbone's
# vocabulary, so class_token_index = len(tokenizer), text_token_index + 1, example_token_index + 2, and the
# embeddings are resized to the new length. train.py does so for these architectures only (a bi-encoder's
# labels go through a label encoder of their own).
GLICLASS_TOKENS = ["<<LABEL>>", "<<SEP>>", "<<EXAMPLE>>"]
ADDS_TOKENS = {"uni-encoder", "bi-encoder-fused", "encoder-decoder"}
# gliclass builds these on a BERT / DeBERTa backbone; the others (encoder-decoder, decoder-kv) need another
# kind of model, so for them only config.json and the tokenizer are written (enough to test a refusal).
BUILDS = {"uni-encoder", "bi-encoder", "bi-encoder-fused"}
BI_ENCODERS = {"bi-encoder", "bi-encoder-fused"}
# gliclass initialises the head with std 0.03 (initializer_range): logits near 0, every label at ~0.5. Redrawn
# with std gain / sqrt(fan_in): 1.4 (He's) keeps activations at unit scale through GELU / ReLU; the mlp scorer's
# last layer gets 6, as its three layers shrink the small differences between the labels' states (a random
# backbone gives every <<LABEL>> a similar one); and logit_scale (the cosine's factor with normalize_features,
# a weight trained models learn) becomes 10. Within one text, logits then differ by a few units for every scorer.
HEAD_GAIN, MLP_LOGIT_GAIN, LOGIT_SCALE = 1.4, 6.0, 10.0
BACKBONE_MAX_LENGTH = 512


def write(directory: Path, backbone: str, seed: int, overrides: dict) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    model_type = FAMILIES[backbone].model_type
    with tempfile.TemporaryDirectory() as scratch:
        # the backbone's own tokenizer files, as a hub snapshot has them; the checkpoint gets what
        # save_pretrained writes after the GLiClass tokens are added, as train.py saves it
        ids = TOKENIZERS[model_type](Path(scratch), BACKBONE_MAX_LENGTH)
        tokenizer = AutoTokenizer.from_pretrained(scratch)
        encoder_config = backbone_config(model_type, ids)
        config = GLiClassModelConfig(**_config_fields(directory, backbone, len(tokenizer), encoder_config, overrides))
        if config.architecture_type in ADDS_TOKENS:
            tokenizer.add_tokens(GLICLASS_TOKENS, special_tokens=True)
        tokenizer.save_pretrained(directory)
    weights = config.architecture_type in BUILDS
    if weights:
        torch.manual_seed(seed)
        model = GLiClassModel(config).eval()
        if config.architecture_type in ADDS_TOKENS:
            model.resize_token_embeddings(len(tokenizer))
        _spread_head(model, seed)
        model.save_pretrained(directory)
    else:
        if config.architecture_type in ADDS_TOKENS:  # what resize_token_embeddings would have recorded
            config.vocab_size = config.encoder_config.vocab_size = len(tokenizer)
        config.save_pretrained(directory)
    saved = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    return {"directory": str(directory), "weights": weights, "config": saved}


def _config_fields(directory: Path, backbone: str, vocabulary: int, encoder_config, overrides: dict) -> dict:
    fields = dict(encoder_config=encoder_config, class_token_index=vocabulary, text_token_index=vocabulary + 1,
                  example_token_index=vocabulary + 2,
                  # train.py's hub name of the backbone: only read to load pretrained backbone weights (never
                  # here) and to look for a LoRA adapter_config.json under it
                  encoder_model=f"tiny-random/{backbone}")
    if overrides.get("architecture_type") in BI_ENCODERS:
        # the label encoder: the same tiny backbone; its tokenizer is this checkpoint's
        fields.update(label_model_config=encoder_config.to_dict(), label_model_name=str(directory))
    return {**fields, **overrides}


def _spread_head(model, seed: int) -> None:
    """Redraw every Linear outside the backbone(s), the projectors' and the scorer's, and logit_scale."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.model.named_modules():
            if isinstance(module, torch.nn.Linear) and not name.startswith(("encoder_model", "label_encoder")):
                gain = MLP_LOGIT_GAIN if name == "scorer.mlp.4" else HEAD_GAIN
                module.weight.normal_(0.0, gain / module.in_features ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=generator)
        model.model.logit_scale.fill_(LOGIT_SCALE)


def classify(model_dir: str, cases: list[dict], max_length: int) -> list[dict]:
    model = GLiClassModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    forwards: list[dict] = []

    def before(_module, _args, kwargs):
        forwards.append({"input_ids": kwargs["input_ids"][0].tolist()})

    def after(_module, _args, _kwargs, output):
        forwards[-1]["logits"] = output.logits[0].tolist()

    model.register_forward_pre_hook(before, with_kwargs=True)
    model.register_forward_hook(after, with_kwargs=True)
    return [_classify_case(model, tokenizer, dict(case), max_length, forwards) for case in cases]


def _classify_case(model, tokenizer, case: dict, max_length: int, forwards: list) -> dict:
    text, labels = case.pop("text"), case.pop("labels")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique (the pipeline answers a dict keyed by label): {labels}")
    classification_type = case.pop("classification_type", "multi-label")
    labels_chunk_size = case.pop("labels_chunk_size", None)
    common = dict(max_length=max_length, classification_type=classification_type, device="cpu", progress_bar=False)
    if labels_chunk_size is None:
        # every label in one sequence
        pipeline = ZeroShotClassificationPipeline(model, tokenizer, **common)
    else:
        # labels_chunk_size labels per sequence, the chunks' logits concatenated, one activation over all
        pipeline = ZeroShotClassificationWithChunkingPipeline(model, tokenizer, labels_chunk_size=labels_chunk_size,
                                                              **common)
    forwards.clear()
    # return_hierarchical with a flat label list: {label: score} for every label, whatever the threshold
    # (without it, single-label answers only the best label and multi-label only those over the threshold)
    scores = pipeline(text, labels, batch_size=1, return_hierarchical=True, **case)[0]
    return {"scores": [float(scores[label]) for label in labels], "input_ids": forwards[0]["input_ids"],
            "forwards": [dict(forward) for forward in forwards]}


def main() -> None:
    from transformers.utils import logging

    logging.set_verbosity_error()
    request = json.load(sys.stdin)
    if request["job"] == "write":
        result = write(Path(request["directory"]), request["backbone"], request.get("seed", 0),
                       request.get("config", {}))
    elif request["job"] == "classify":
        result = classify(request["model"], request["cases"], request.get("max_length", 1024))
    else:
        raise ValueError(f"unknown job {request['job']!r}: 'write' or 'classify'")
    json.dump(result, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
