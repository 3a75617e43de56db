"""What one request to the encoder model may hold, checked before it joins a batch.

The encoder is an internal step of the ensemble, but Triton serves every model of the repository to
anyone who can reach the inference API. Unchecked, one caller's out-of-range token id failed the whole
dynamic batch it landed in (ONNX Runtime's Gather raises for the batch), and a 512-token request on a
model exported for 128 ran for tens of seconds. Each request is checked on its own, so a bad one gets
its own INVALID_ARG and the requests batched with it run. Plain numpy: unit-tested without Triton.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from zsc_server.scoring import InputError


@dataclasses.dataclass(frozen=True)
class EncoderLimits:
    """Written by export into the encoder's config parameters, read back by the encoder models."""

    max_sequence_length: int  # the export's max_length: the longest pair the preprocess ever sends
    vocab_size: int  # rows of the token embedding: input_ids must lie in [0, vocab_size)
    type_vocab_size: int = 2  # rows of the segment embedding: token_type_ids in [0, type_vocab_size)

    def to_parameters(self) -> dict[str, str]:
        return {field.name: str(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> EncoderLimits | None:
        """None for a repository exported before the limits were written (nothing is checked then)."""
        names = [field.name for field in dataclasses.fields(cls)]
        if not all(name in parameters for name in names):
            return None
        return cls(**{name: int(parameters[name]) for name in names})


def check_request(inputs: dict[str, np.ndarray | None], limits: EncoderLimits | None) -> dict[str, np.ndarray]:
    """One request's encoder inputs, each [rows, tokens] of the same shape, or InputError naming the input.
    Triton has already checked each input's datatype and rank against the config, and rows against
    max_batch_size; what it cannot check is here."""
    missing = [name for name, array in inputs.items() if array is None]
    if missing:
        raise InputError(missing[0], "is required")
    arrays: dict[str, np.ndarray] = dict(inputs)  # type: ignore[arg-type]
    first_name, first = next(iter(arrays.items()))
    for name, array in arrays.items():
        if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
            raise InputError(name, f"must be [rows, tokens] with at least one of each; got shape {list(array.shape)}")
        if array.shape != first.shape:
            raise InputError(name, f"has shape {list(array.shape)}; {first_name} has {list(first.shape)}: "
                                   "every input must have the same shape")
    if limits is None:
        return arrays
    if first.shape[1] > limits.max_sequence_length:
        raise InputError(first_name, f"has {first.shape[1]} tokens per row; this encoder was exported for at most "
                                     f"{limits.max_sequence_length} (max_length)")
    _check_range(arrays, "input_ids", 0, limits.vocab_size, "the vocabulary size")
    _check_range(arrays, "attention_mask", 0, 2, "0 or 1")
    _check_right_padding(arrays.get("attention_mask"))
    _check_range(arrays, "token_type_ids", 0, max(1, limits.type_vocab_size), "the segment vocabulary size")
    return arrays


def _check_right_padding(mask: np.ndarray | None) -> None:
    """Each row's tokens first, then its padding, as the preprocess pads: a packed batch keeps a row's first
    `sum(mask)` tokens and pools its first one, so a row that starts with padding or has a hole in it would be
    read as another row's tokens."""
    if mask is None:
        return
    if not np.all(mask[:, 0] == 1):
        raise InputError("attention_mask", "must start each row with a token (1): rows are padded on the right")
    if np.any(np.diff(mask, axis=1) > 0):
        raise InputError("attention_mask", "must be 1s then 0s in each row: rows are padded on the right")


def _check_range(arrays: dict[str, np.ndarray], name: str, low: int, high: int, what: str) -> None:
    array = arrays.get(name)
    if array is None:
        return
    smallest, largest = int(array.min()), int(array.max())
    if smallest < low or largest >= high:
        bad = smallest if smallest < low else largest
        raise InputError(name, f"holds {bad}, outside [{low}, {high}) ({what})")
