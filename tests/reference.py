"""PyTorch references for the served scores, written from ModelScope's pipeline, not from our code.

modelscope/pipelines/nlp/zero_shot_classification_pipeline.py:
    labels = labels.replace('，', ','); [l.strip() for l in labels.split(',') if l.strip()]
    pairs = [[text, template.format(label)] for label in labels]
    tokenizer(pairs, padding=True, truncation='only_first', max_length=...)
    if multi_label or len(logits) == 1: softmax(logits[..., [contradiction, entailment]])[..., 1]
    else: softmax(logits[..., entailment])
    reversed(scores.argsort())
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer


def parse_labels(labels):
    if isinstance(labels, str):
        labels = labels.replace("，", ",")
        labels = [label.strip() for label in labels.split(",") if label.strip()]
    return labels


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _ranked(labels, scores):
    order = list(reversed(np.argsort(scores, kind="stable")))
    return [labels[i] for i in order], [float(scores[i]) for i in order]


class NliReference:
    def __init__(self, directory: Path, max_length: int, entailment: int, contradiction: int,
                 modelscope_layout: bool, default_template: str = "{}") -> None:
        self.tokenizer = BertTokenizer(str(directory / "vocab.txt"), do_lower_case=True)
        if modelscope_layout:
            config = json.loads((directory / "config.json").read_text())
            config.pop("model_type")
            self.model = BertForSequenceClassification(BertConfig(num_labels=3, **config))
            self.model.load_state_dict(torch.load(directory / "pytorch_model.bin", weights_only=True))
        else:
            self.model = BertForSequenceClassification.from_pretrained(directory)
        self.model.eval()
        self.max_length, self.entailment, self.contradiction = max_length, entailment, contradiction
        self.default_template = default_template

    def logits(self, text, labels, hypothesis_template=None) -> np.ndarray:
        """[labels, classes]: the model's logits for each (text, hypothesis) pair."""
        hypothesis_template = hypothesis_template or self.default_template
        pairs = [[text, hypothesis_template.format(label)] for label in labels]
        features = self.tokenizer(pairs, padding=True, truncation="only_first",
                                  max_length=self.max_length, return_tensors="pt")
        with torch.no_grad():
            return self.model(**features).logits.double().numpy()

    def __call__(self, text, candidate_labels, hypothesis_template=None, multi_label=False):
        labels = parse_labels(candidate_labels)
        return self.scores(labels, self.logits(text, labels, hypothesis_template), multi_label)

    def scores(self, labels, logits, multi_label=False):
        """Ranked (labels, scores) from each label's logits, as the pipeline scores them."""
        if multi_label or len(logits) == 1:
            scores = _softmax(logits[..., [self.contradiction, self.entailment]])[..., 1]
        else:
            scores = _softmax(logits[..., self.entailment])
        return _ranked(labels, scores)


class EmbeddingReference:
    """sentence-transformers style: mean pooling over the attention mask, then cosine similarity."""

    def __init__(self, directory: Path, max_length: int) -> None:
        self.tokenizer = BertTokenizer(str(directory / "vocab.txt"), do_lower_case=True)
        self.model = BertModel.from_pretrained(directory, add_pooling_layer=False).eval()
        self.max_length = max_length

    def embed(self, sentences):
        features = self.tokenizer(sentences, padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt")
        with torch.no_grad():
            hidden = self.model(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).float()
        return ((hidden * mask).sum(1) / mask.sum(1)).double().numpy()

    def __call__(self, text, candidate_labels, hypothesis_template="{}", multi_label=False):
        labels = parse_labels(candidate_labels)
        emb = self.embed([text] + [hypothesis_template.format(label) for label in labels])
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        return _ranked(labels, emb[1:] @ emb[0])
