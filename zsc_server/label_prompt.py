"""GLiClass prompts: the labels and the text in one sequence, tokenized as the gliclass package's pipeline does.

Reference: gliclass/pipeline.py, UniEncoderZeroShotClassificationPipeline.prepare_input: each label after a
<<LABEL>> marker, then <<SEP>>, joined without spaces, after the text (or before it: the checkpoint's
prompt_first), tokenized as one sequence with the tokenizer's special tokens. The model reads each label from
its marker's position, so a row holds as many labels as markers. Labels beyond `labels_per_row` go into further
rows, each with the whole text, as ZeroShotClassificationWithChunkingPipeline splits them.

Where a row would exceed max_length the pipeline cuts the sequence's end, labels included (a cut label is then
scored from an empty slot); here the text gives up its last tokens instead and every label keeps its marker.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Encoding, Tokenizer

from zsc_server import tensor_names as names
from zsc_server.scoring import InputError
from zsc_server.tokenization import EncodedBatch, pad_id, pad_rows

LABEL_MARKER, SEP_MARKER, EXAMPLE_MARKER = "<<LABEL>>", "<<SEP>>", "<<EXAMPLE>>"
MARKERS = (LABEL_MARKER, SEP_MARKER, EXAMPLE_MARKER)


def label_rows(labels: list[str], labels_per_row: int) -> list[list[str]]:
    """The labels as the rows that hold them, in order."""
    return [labels[start:start + labels_per_row] for start in range(0, len(labels), labels_per_row)]


def row_count(label_count: int, labels_per_row: int) -> int:
    return -(-label_count // labels_per_row)


def marker_in(value: str, field: str) -> None:
    """Refuse a value holding one of the model's markers, naming its field: the model would read it as one."""
    marker = next((marker for marker in MARKERS if marker in value), None)
    if marker:
        raise InputError(field, f"contains {marker}, the model's own marker: it would be read as one")


class LabelPromptTokenizer:
    def __init__(self, tokenizer_json: str | Path, max_length: int, buckets: tuple[int, ...], labels_per_row: int,
                 prompt_first: bool) -> None:
        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.max_length, self.buckets = max_length, buckets
        self.labels_per_row, self.prompt_first = labels_per_row, prompt_first
        self.pad_id = pad_id(self._tokenizer)
        self.label_id = self._tokenizer.token_to_id(LABEL_MARKER)
        if self.label_id is None:
            raise ValueError(f"the tokenizer has no {LABEL_MARKER} token: not a GLiClass checkpoint's tokenizer")

    def encode(self, text: str, labels: list[str]) -> EncodedBatch:
        """One row per `labels_per_row` labels: the text and that row's labels, padded to a bucket."""
        marker_in(text, names.TEXT)
        for label in labels:
            marker_in(label, names.CANDIDATE_LABELS)
        rows = label_rows(labels, self.labels_per_row)
        sequences = [self._sequence(text, row) for row in rows]
        # one call for all rows: the tokenizer encodes them in parallel (a long text is in every row)
        encodings = self._tokenizer.encode_batch([sequence for sequence, _ in sequences])
        return pad_rows([self._row(encoding, text_start, len(text), row)
                         for encoding, (_, text_start), row in zip(encodings, sequences, rows)], self.buckets,
                        self.pad_id)

    def _sequence(self, text: str, labels: list[str]) -> tuple[str, int]:
        """The row's sequence, and where the text starts in it."""
        prompt = "".join(LABEL_MARKER + label for label in labels) + SEP_MARKER
        return (prompt + text, len(prompt)) if self.prompt_first else (text + prompt, 0)

    def _row(self, encoding: Encoding, text_start: int, text_length: int,
             labels: list[str]) -> tuple[list[int], list[int]]:
        ids, types = list(encoding.ids), list(encoding.type_ids)
        if ids.count(self.label_id) != len(labels):  # e.g. a normalizer that makes a marker of other characters
            raise InputError(names.CANDIDATE_LABELS, f"{len(labels)} labels tokenized to {ids.count(self.label_id)} "
                             f"{LABEL_MARKER} markers: a label or the text reads as the model's marker")
        excess = len(ids) - self.max_length
        if excess > 0:
            from_text = text_tokens(encoding, text_start, text_start + text_length)
            if len(from_text) <= excess:
                raise InputError(names.CANDIDATE_LABELS, f"{len(labels)} labels take {len(ids) - len(from_text)} "
                                 f"tokens of max_length {self.max_length}, leaving no room for the text: send fewer "
                                 "or shorter labels")
            cut = set(from_text[-excess:])
            ids = [token for i, token in enumerate(ids) if i not in cut]
            types = [token for i, token in enumerate(types) if i not in cut]
        return ids, types


def text_tokens(encoding: Encoding, start: int, end: int) -> list[int]:
    """Positions of the tokens made of the text's characters (start..end of the sequence), in order."""
    return [i for i, ((first, last), special) in enumerate(zip(encoding.offsets, encoding.special_tokens_mask))
            if not special and start <= first < last <= end]
