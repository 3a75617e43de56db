"""A tiny random plain-torch BERT (zsc_server.torch_bert) and right-padded encoder inputs, as the preprocess pads
them: what the python-torch runtime's tests (layouts, FP8, the memory probe) run on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zsc_server.tokenization import ENCODER_INPUTS
from zsc_server.torch_bert import BertShape, PlainBert, save_plain_bert

VOCAB = 100


def tiny_bert(head: str = "classifier", layers: int = 2) -> PlainBert:
    """Hidden 32, 4 heads (head size 8, FlashAttention's smallest), the same weights on every call."""
    torch.manual_seed(0)
    shape = BertShape(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                      intermediate_size=64, num_labels=3 if head == "classifier" else 0, head=head)
    return PlainBert(shape).eval()


def save_tiny_bert(path: Path, head: str = "classifier", layers: int = 2) -> Path:
    """tiny_bert saved as the export saves model.pt."""
    bert = tiny_bert(head, layers)
    save_plain_bert(path, bert.shape, bert.state_dict())
    return path


def right_padded(lengths: list[int], width: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """input_ids, attention_mask, token_type_ids [rows, width] for rows of `lengths` real tokens (random ids,
    the second half of each row segment 1), padded on the right to `width` (default: the longest)."""
    width = width or max(lengths)
    real = np.arange(width)[None, :] < np.array(lengths)[:, None]
    mask = real.astype(np.int64)
    input_ids = np.random.default_rng(seed).integers(1, VOCAB, (len(lengths), width)) * mask
    token_type_ids = (np.arange(width)[None, :] >= np.array(lengths)[:, None] // 2) * mask
    return [input_ids, mask, token_type_ids]


def requests(widths_and_lengths: list[tuple[int, list[int]]]) -> list[dict[str, np.ndarray]]:
    """One request's encoder inputs per (width, row lengths), each with its own random ids."""
    return [dict(zip(ENCODER_INPUTS, right_padded(lengths, width, seed)))
            for seed, (width, lengths) in enumerate(widths_and_lengths)]
