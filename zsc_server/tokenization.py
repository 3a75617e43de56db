"""Tokenize (text, hypothesis) pairs or single sentences and pad them to a sequence bucket.

Uses the ``tokenizers`` library on a ``tokenizer.json`` written by export (no
``transformers`` on the server). The text is tokenized once per request, not once
per label: each pair is assembled with the tokenizer's own post-processor, which
applies ``only_first`` truncation and the special tokens exactly as a
``tokenizer(text, hypothesis, truncation="only_first")`` call would.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from zsc_server.scoring import InputError
from zsc_server.settings import ENCODER_INPUTS


@dataclasses.dataclass
class EncodedBatch:
    """Encoder inputs, int64 [rows, bucket]."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def as_dict(self, names: tuple[str, ...] = ENCODER_INPUTS) -> dict[str, np.ndarray]:
        """The inputs the encoder takes (`names`: e.g. no token_type_ids for RoBERTa), by name."""
        return {name: getattr(self, name) for name in names}


def pick_bucket(length: int, buckets: tuple[int, ...]) -> int:
    for bucket in buckets:
        if length <= bucket:
            return bucket
    raise ValueError(f"sequence of {length} tokens exceeds the largest bucket {buckets[-1]}")


def pad_id(tokenizer: Tokenizer) -> int:
    """The padding export wrote into tokenizer.json (the checkpoint tokenizer's pad token: <pad> = 1 for
    RoBERTa and BART), else [PAD] (BERT vocabularies), else 0."""
    if tokenizer.padding is not None:
        return int(tokenizer.padding["pad_id"])
    bert_pad = tokenizer.token_to_id("[PAD]")
    return 0 if bert_pad is None else bert_pad


class PairTokenizer:
    def __init__(self, tokenizer_json: str | Path, max_length: int, buckets: tuple[int, ...]) -> None:
        self.max_length = max_length
        self.buckets = buckets
        self._pairs = self._load(tokenizer_json, max_length, "only_first")
        self._sentences = self._load(tokenizer_json, max_length, "longest_first")
        self.pad_id = pad_id(Tokenizer.from_file(str(tokenizer_json)))

    @staticmethod
    def _load(path: str | Path, max_length: int, strategy: str) -> Tokenizer:
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length, strategy=strategy)
        return tokenizer

    def encode_pairs(self, text: str, hypotheses: list[str]) -> EncodedBatch:
        """One row per hypothesis: [CLS] text [SEP] hypothesis [SEP], text truncated first."""
        text_enc = self._pairs.encode(text, add_special_tokens=False)
        hyp_encs = self._pairs.encode_batch(hypotheses, add_special_tokens=False)
        rows = []
        for label_index, hyp_enc in enumerate(hyp_encs):
            try:
                rows.append(self._pairs.post_process(text_enc, hyp_enc, add_special_tokens=True))
            except Exception as exc:  # tokenizers raises a plain Exception on truncation failure
                raise InputError(
                    "HYPOTHESIS_TEMPLATE",
                    f"the hypothesis for label {label_index} ({len(hyp_enc.ids)} tokens) leaves no room "
                    f"for the text within max_length={self.max_length}: shorten the label or template "
                    f"({exc})",
                ) from None
        return self._pad(rows)

    def encode_sentences(self, sentences: list[str]) -> EncodedBatch:
        """One row per sentence: [CLS] sentence [SEP], truncated to max_length."""
        return self._pad(self._sentences.encode_batch(sentences, add_special_tokens=True))

    def _pad(self, encodings: list[Encoding]) -> EncodedBatch:
        bucket = pick_bucket(max(len(e.ids) for e in encodings), self.buckets)
        shape = (len(encodings), bucket)
        input_ids = np.full(shape, self.pad_id, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        token_type_ids = np.zeros(shape, dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            input_ids[row, :n] = enc.ids
            attention_mask[row, :n] = 1
            token_type_ids[row, :n] = enc.type_ids
        return EncodedBatch(input_ids, attention_mask, token_type_ids)
