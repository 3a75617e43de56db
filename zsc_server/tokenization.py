"""Tokenize (text, hypothesis) pairs or single sentences and pad them to a sequence bucket.

Uses the ``tokenizers`` library on a ``tokenizer.json`` written by export (no
``transformers`` on the server). The text is tokenized once per request, not once
per label: each pair is assembled with the tokenizer's own post-processor, which
applies ``only_first`` truncation and the special tokens exactly as a
``tokenizer(text, hypothesis, truncation="only_first")`` call would.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from zsc_server import tensor_names as names
from zsc_server.pair_layout import NoRoomForText, PairLayout
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
    # hypotheses (template + label) recur across requests: their token ids are kept, least recently used out
    HYPOTHESIS_CACHE_SIZE = 4096

    def __init__(self, tokenizer_json: str | Path, max_length: int, buckets: tuple[int, ...]) -> None:
        self.max_length = max_length
        self.buckets = buckets
        self._pairs = self._load(tokenizer_json, max_length, "only_first")
        self._sentences = self._load(tokenizer_json, max_length, "longest_first")
        self.pad_id = pad_id(Tokenizer.from_file(str(tokenizer_json)))
        self.layout = self._checked_layout()
        self._hypothesis_ids: OrderedDict[str, list[int]] = OrderedDict()

    @staticmethod
    def _load(path: str | Path, max_length: int, strategy: str) -> Tokenizer:
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length, strategy=strategy)
        return tokenizer

    def encode_pairs(self, text: str, hypotheses: list[str]) -> EncodedBatch:
        """One row per hypothesis: [CLS] text [SEP] hypothesis [SEP], text truncated first."""
        text_enc = self._pairs.encode(text, add_special_tokens=False)
        if self.layout is None:
            return self._post_processed_pairs(text_enc, hypotheses)
        hypothesis_ids = self._hypotheses(hypotheses)
        try:
            return self._pad_rows(self.layout.rows(text_enc.ids, hypothesis_ids, self.max_length))
        except NoRoomForText as exc:
            index = exc.args[0]
            raise self._no_room(index, len(hypothesis_ids[index]), "no text token would be left") from None

    def _post_processed_pairs(self, text_enc: Encoding, hypotheses: list[str]) -> EncodedBatch:
        """The tokenizer's own post-processor per pair: for layouts PairLayout does not know."""
        rows = []
        for label_index, hyp_enc in enumerate(self._pairs.encode_batch(hypotheses, add_special_tokens=False)):
            try:
                rows.append(self._pairs.post_process(text_enc, hyp_enc, add_special_tokens=True))
            except Exception as exc:  # tokenizers raises a plain Exception on truncation failure
                raise self._no_room(label_index, len(hyp_enc.ids), str(exc)) from None
        return self._pad(rows)

    def _hypotheses(self, hypotheses: list[str]) -> list[list[int]]:
        cache = self._hypothesis_ids
        missing = list(dict.fromkeys(h for h in hypotheses if h not in cache))
        if missing:
            for hypothesis, encoding in zip(missing, self._pairs.encode_batch(missing, add_special_tokens=False)):
                cache[hypothesis] = encoding.ids
            while len(cache) > self.HYPOTHESIS_CACHE_SIZE:
                cache.popitem(last=False)
        ids = []
        for hypothesis in hypotheses:
            cache.move_to_end(hypothesis)
            ids.append(cache[hypothesis])
        return ids

    def _no_room(self, label_index: int, tokens: int, why: str) -> InputError:
        return InputError(
            names.HYPOTHESIS_TEMPLATE,
            f"the hypothesis for label {label_index} ({tokens} tokens) leaves no room for the text within "
            f"max_length={self.max_length}: shorten the label or template ({why})",
        )

    def _checked_layout(self) -> PairLayout | None:
        """The post-processor's pair layout, if it reproduces `post_process` exactly on sample pairs
        (short and long texts, truncated or not); else None and every pair goes through `post_process`."""
        layout = PairLayout.learn(self._pairs)
        if layout is None:
            return None
        texts = ["a b", "hello world " * self.max_length, "我的快递还没到" * 3]
        hypotheses = ["b", "this is about delivery", "咨询"]
        for text in texts:
            text_enc = self._pairs.encode(text, add_special_tokens=False)
            encodings = self._pairs.encode_batch(hypotheses, add_special_tokens=False)
            expected = [self._pairs.post_process(text_enc, h, add_special_tokens=True) for h in encodings]
            got = layout.rows(text_enc.ids, [h.ids for h in encodings], self.max_length)
            if any(list(ids) != e.ids or list(types) != e.type_ids for (ids, types), e in zip(got, expected)):
                return None
        return layout

    def encode_sentences(self, sentences: list[str]) -> EncodedBatch:
        """One row per sentence: [CLS] sentence [SEP], truncated to max_length."""
        return self._pad(self._sentences.encode_batch(sentences, add_special_tokens=True))

    def _pad(self, encodings: list[Encoding]) -> EncodedBatch:
        return self._pad_rows([(e.ids, e.type_ids) for e in encodings])

    def _pad_rows(self, rows: list[tuple]) -> EncodedBatch:
        """(ids, type ids) rows -> int64 arrays padded to the smallest bucket that holds the longest row."""
        bucket = pick_bucket(max(len(ids) for ids, _ in rows), self.buckets)
        shape = (len(rows), bucket)
        input_ids = np.full(shape, self.pad_id, dtype=np.int64)
        attention_mask = np.zeros(shape, dtype=np.int64)
        token_type_ids = np.zeros(shape, dtype=np.int64)
        for row, (ids, types) in enumerate(rows):
            n = len(ids)
            input_ids[row, :n] = ids
            attention_mask[row, :n] = 1
            token_type_ids[row, :n] = types
        return EncodedBatch(input_ids, attention_mask, token_type_ids)
