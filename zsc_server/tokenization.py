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

# Consecutive windows of a long text share this share of their tokens, so that a phrase cut by one window's
# edge is whole in the next.
WINDOW_OVERLAP = 0.25


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


def sentence_affixes(tokenizer: Tokenizer) -> tuple[tuple[list[int], list[int]], tuple[list[int], list[int]], int]:
    """The special tokens (ids, type ids) the post-processor puts before and after one sentence, and the
    sentence's type id: read off one real encoding, as PairLayout reads the pair layout."""
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a", add_special_tokens=True)
    ids, types = list(full.ids), list(full.type_ids)
    at = next(i for i in range(len(ids)) if ids[i:i + len(plain)] == plain)
    end = at + len(plain)
    return (ids[:at], types[:at]), (ids[end:], types[end:]), types[at]


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

    def __init__(self, tokenizer_json: str | Path, max_length: int, buckets: tuple[int, ...],
                 max_windows: int = 1) -> None:
        """max_windows > 1: a text longer than max_length becomes up to that many overlapping windows, each
        paired with every hypothesis (window-major rows), or encoded as a sentence of its own."""
        self.max_length = max_length
        self.buckets = buckets
        self.max_windows = max_windows
        self._pairs = self._load(tokenizer_json, max_length, "only_first")
        self._sentences = self._load(tokenizer_json, max_length, "longest_first")
        self.pad_id = pad_id(Tokenizer.from_file(str(tokenizer_json)))
        self.layout = self._checked_layout()
        self._hypothesis_ids: OrderedDict[str, list[int]] = OrderedDict()
        if max_windows > 1:
            if self.layout is None:
                raise ValueError("windows over long texts need a tokenizer whose pair layout is known "
                                 "(zsc_server.pair_layout); this one's is not: use max_windows 1")
            self._whole = Tokenizer.from_file(str(tokenizer_json))
            self._whole.no_padding()
            self._whole.no_truncation()
            self._sentence_affixes = sentence_affixes(self._sentences)

    @staticmethod
    def _load(path: str | Path, max_length: int, strategy: str) -> Tokenizer:
        tokenizer = Tokenizer.from_file(str(path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length, strategy=strategy)
        return tokenizer

    def encode_pairs(self, text: str, hypotheses: list[str]) -> EncodedBatch:
        """One row per hypothesis: [CLS] text [SEP] hypothesis [SEP], text truncated first; with windows, one
        row per (window, hypothesis), window by window."""
        if self.max_windows > 1:
            text_ids = self._whole.encode(text, add_special_tokens=False).ids
        else:
            text_enc = self._pairs.encode(text, add_special_tokens=False)
            if self.layout is None:
                return self._post_processed_pairs(text_enc, hypotheses)
            text_ids = text_enc.ids
        hypothesis_ids = self._hypotheses(hypotheses)
        room = self.max_length - self.layout.special_count - max(len(ids) for ids in hypothesis_ids)
        windows = self._windows(text_ids, room) if self.max_windows > 1 and room > 0 else [text_ids]
        try:
            return self._pad_rows([row for window in windows
                                   for row in self.layout.rows(window, hypothesis_ids, self.max_length)])
        except NoRoomForText as exc:
            index = exc.args[0]
            raise self._no_room(index, len(hypothesis_ids[index]), "no text token would be left") from None

    def _windows(self, ids: list[int], room: int) -> list[list[int]]:
        """`ids` as overlapping windows of `room` tokens (one when it fits), the last one ending at the end."""
        if len(ids) <= room:
            return [ids]
        step = max(1, room - int(room * WINDOW_OVERLAP))
        starts = list(range(0, len(ids) - room, step)) + [len(ids) - room]
        self._check_windows(len(starts), len(ids))
        return [ids[start:start + room] for start in starts]

    def _check_windows(self, count: int, tokens: int) -> None:
        if count > self.max_windows:
            raise InputError(names.TEXT, f"is {tokens} tokens: it would take {count} windows of max_length "
                             f"{self.max_length}, over the {self.max_windows} a request may use (max_windows)")

    def text_windows(self, text: str) -> list[tuple[list[int], list[int]]]:
        """The text as sentences of its own: (ids, type ids) of each window (one, truncated, without windows)."""
        if self.max_windows == 1:
            encoding = self._sentences.encode(text, add_special_tokens=True)
            return [(encoding.ids, encoding.type_ids)]
        (prefix, prefix_types), (suffix, suffix_types), text_type = self._sentence_affixes
        ids = self._whole.encode(text, add_special_tokens=False).ids
        return [(prefix + window + suffix, prefix_types + [text_type] * len(window) + suffix_types)
                for window in self._windows(ids, self.max_length - len(prefix) - len(suffix))]

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

    def encode_text_and_sentences(self, text: str, sentences: list[str]) -> EncodedBatch:
        """The text's rows (its windows, or the text truncated), then one row per sentence (the hypotheses)."""
        encodings = self._sentences.encode_batch(sentences, add_special_tokens=True) if sentences else []
        return self._pad_rows(self.text_windows(text) + [(e.ids, e.type_ids) for e in encodings])

    def _pad(self, encodings: list[Encoding]) -> EncodedBatch:
        return self._pad_rows([(e.ids, e.type_ids) for e in encodings])

    def _pad_rows(self, rows: list[tuple]) -> EncodedBatch:
        return pad_rows(rows, self.buckets, self.pad_id)


def pad_rows(rows: list[tuple], buckets: tuple[int, ...], pad: int) -> EncodedBatch:
    """(ids, type ids) rows -> int64 arrays padded to the smallest bucket that holds the longest row."""
    bucket = pick_bucket(max(len(ids) for ids, _ in rows), buckets)
    shape = (len(rows), bucket)
    input_ids = np.full(shape, pad, dtype=np.int64)
    attention_mask = np.zeros(shape, dtype=np.int64)
    token_type_ids = np.zeros(shape, dtype=np.int64)
    for row, (ids, types) in enumerate(rows):
        n = len(ids)
        input_ids[row, :n] = ids
        attention_mask[row, :n] = 1
        token_type_ids[row, :n] = types
    return EncodedBatch(input_ids, attention_mask, token_type_ids)
