"""Request validation, label templating and tokenization: the ensemble's first step."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from zsc_server import tensor_names as names
from zsc_server.label_prompt import LabelPromptTokenizer, marker_in, row_count
from zsc_server.scoring import (
    InputError,
    check_template,
    decode_utf8,
    hypotheses_bytes,
    is_blank,
    make_hypotheses,
    parse_labels,
)
from zsc_server.settings import ScoringMode, ScoringSettings
from zsc_server.tokenization import EncodedBatch, PairTokenizer


@dataclasses.dataclass
class CheckedRequest:
    """A valid request, templated, not tokenized yet."""
    text: str
    labels: list[str]
    multi_label: bool  # resolved: one label always scores as multi-label
    hypotheses: list[str]


@dataclasses.dataclass
class PreparedRequest:
    # NLI: one pair per label; embedding: the text, then each hypothesis unless cached; GLiClass: the text with
    # labels_per_row labels in each row
    encoded: EncodedBatch
    labels: list[str]
    multi_label: bool  # resolved: one label always scores as multi-label
    hypotheses: list[str]


class Preprocessor:
    def __init__(self, settings: ScoringSettings, tokenizer_json: str | Path, cached_hypotheses: bool = False) -> None:
        """cached_hypotheses (embedding mode only): `encoded` holds the text alone; the caller takes the
        hypotheses' embeddings from its label cache (zsc_server.label_cache)."""
        if cached_hypotheses and settings.mode is not ScoringMode.EMBEDDING:
            raise ValueError("only embedding mode can reuse hypothesis embeddings: NLI encodes text and "
                             "hypothesis together")
        self.settings, self.cached_hypotheses = settings, cached_hypotheses
        # GLiClass: the text and the labels in rows of one sequence; the others: pairs or sentences
        self.label_prompts = (LabelPromptTokenizer(tokenizer_json, settings.max_length, settings.buckets,
                                                   settings.labels_per_row, settings.prompt_first)
                              if settings.mode is ScoringMode.GLICLASS else None)
        self.tokenizer = None if self.label_prompts else PairTokenizer(
            tokenizer_json, settings.max_length, settings.buckets, settings.max_windows)

    def prepare(self, text: bytes, labels: list[bytes], template: bytes | None = None,
                multi_label: bool | None = None) -> PreparedRequest:
        """`check`, then `encode`: a request with nothing (admission control) between the two."""
        return self.encode(self.check(text, labels, template, multi_label))

    def check(
        self,
        text: bytes,
        labels: list[bytes],
        template: bytes | None = None,
        multi_label: bool | None = None,
    ) -> CheckedRequest:
        """Validate and template a request: everything but the tokenization (cheap, so that admission control
        can refuse a valid request before its costly part)."""
        s = self.settings
        if len(text) > s.max_text_bytes:
            raise InputError(
                names.TEXT, f"is {len(text)} bytes; the limit is {s.max_text_bytes} bytes (max_text_bytes)"
            )
        text_str = decode_utf8(text, names.TEXT)
        if is_blank(text_str):
            raise InputError(names.TEXT, "is empty")  # or only whitespace and zero-width characters
        # Checked before and after splitting: 10,000 elements are refused before decoding them.
        self._check_label_count(len(labels))
        labels_bytes = sum(len(raw) for raw in labels)
        if labels_bytes > s.max_labels_bytes:
            raise InputError(
                names.CANDIDATE_LABELS,
                f"are {labels_bytes} bytes in all; the limit is {s.max_labels_bytes} bytes (max_labels_bytes)",
            )
        label_strs = parse_labels([decode_utf8(raw, names.CANDIDATE_LABELS) for raw in labels])
        self._check_label_count(len(label_strs))
        if template is None or template == b"":
            template_str = s.default_template
        else:
            if len(template) > s.max_template_bytes:
                raise InputError(
                    names.HYPOTHESIS_TEMPLATE,
                    f"is {len(template)} bytes; the limit is {s.max_template_bytes} bytes",
                )
            template_str = check_template(decode_utf8(template, names.HYPOTHESIS_TEMPLATE))
            if self.label_prompts:
                marker_in(template_str, names.HYPOTHESIS_TEMPLATE)
        # Every '{}' takes the label, so a template of 512 '{}' made 33 MB of hypotheses from 64 KB of
        # labels (22 s of tokenizing for one request); one '{}' can never exceed this bound.
        size = hypotheses_bytes(template_str, label_strs)
        bound = s.max_labels_bytes + len(label_strs) * s.max_template_bytes
        if size > bound:
            raise InputError(
                names.HYPOTHESIS_TEMPLATE,
                f"puts each label in {template_str.count('{}')} times: the hypotheses would be {size} bytes, "
                f"over the limit of {bound} bytes (max_labels_bytes + labels x max_template_bytes)",
            )
        hypotheses = make_hypotheses(template_str, label_strs)
        return CheckedRequest(text_str, label_strs, bool(multi_label) or len(label_strs) == 1, hypotheses)

    def encoder_rows(self, request: CheckedRequest) -> int:
        """The rows the request puts through the encoder step (label-cache misses come on top)."""
        if self.label_prompts:
            return row_count(len(request.hypotheses), self.settings.labels_per_row)
        if self.settings.mode is ScoringMode.NLI:
            return len(request.hypotheses)
        return 1 if self.cached_hypotheses else 1 + len(request.hypotheses)

    def encode(self, request: CheckedRequest) -> PreparedRequest:
        """Tokenized; the rows may be more than `encoder_rows` said when the text is cut into windows."""
        if self.label_prompts:  # the hypotheses are the labels as the template writes them
            encoded = self.label_prompts.encode(request.text, request.hypotheses)
        elif self.settings.mode is ScoringMode.NLI:
            encoded = self.tokenizer.encode_pairs(request.text, request.hypotheses)
        else:
            encoded = self.tokenizer.encode_text_and_sentences(
                request.text, [] if self.cached_hypotheses else request.hypotheses)
        rows, limit = encoded.input_ids.shape[0], self.settings.rows_per_request
        if rows > limit:  # windows x labels: more than the encoder takes in one request
            raise InputError(names.TEXT, f"takes {rows} encoder rows in windows of max_length "
                             f"{self.settings.max_length} x {len(request.labels)} labels, over the {limit} one "
                             "request may use: send a shorter text or fewer labels")
        return PreparedRequest(encoded, request.labels, request.multi_label, request.hypotheses)

    def encode_hypotheses(self, hypotheses: list[str]) -> EncodedBatch:
        """Encoder inputs for hypotheses alone (embedding mode): what the label cache asks for its misses."""
        return self.tokenizer.encode_sentences(hypotheses)

    def _check_label_count(self, count: int) -> None:
        if count > self.settings.max_labels:
            raise InputError(
                names.CANDIDATE_LABELS,
                f"has {count} labels; the limit is {self.settings.max_labels} (max_labels)",
            )
