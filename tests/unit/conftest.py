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


@pytest.fixture
def admission(tmp_path, monkeypatch):
    """(front_gate, server_side): the fronts' FrontGate following a tritonserver's admission state, and that
    state as the preprocess and encoder see it (book rows with admit(), strike them off with executed()).
    Budget 100 ms at 2 ms per row: 51 rows booked make the server busy."""
    from zsc_server.admission import AdmissionGate, AdmissionSettings, FrontGate

    monkeypatch.setattr("zsc_server.admission.SHM", tmp_path)
    settings = AdmissionSettings(budget_ms=100, row_ms=2.0, forget_ms=60_000)
    front_gate = FrontGate(settings)
    front_gate.follow(4242)
    server_side = AdmissionGate(settings, tmp_path / "zsc-admission-4242")
    yield front_gate, server_side
    server_side.close()
