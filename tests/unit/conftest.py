"""Unit-test fixtures shared by several modules."""

from __future__ import annotations

import pytest

from export.random_checkpoint import write_vocab
from export.tokenizer import TokenizerFacts, write_tokenizer_json


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    """A tokenizer.json for the tests' small BERT vocabulary (lowercasing)."""
    root = tmp_path_factory.mktemp("tok")
    write_vocab(root / "vocab.txt")
    write_tokenizer_json(root, TokenizerFacts(lowercase=True), root / "tokenizer.json")
    return root / "tokenizer.json"
