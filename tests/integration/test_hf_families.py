"""Each Hugging Face NLI family, exported and served, answers as transformers' zero-shot pipeline does.

One tiny random checkpoint per family (tests/hf_checkpoints.py), exported with `--max-length model` (where
the pipeline truncates: 512, BART 1024) and served by a real tritonserver, one family at a time. The
reference is `transformers.pipeline("zero-shot-classification")` run on the same directory: transformers
5 in this process, and transformers 4.57 in .venv-modelscope (ZSC_MODELSCOPE_PYTHON, set by `make test`)
for every family in one run. DeBERTa-v3 is compared with 4.57 only: transformers 5's DebertaV2Tokenizer
normalizes with NFC where the checkpoint's sentencepiece model (and its tokenizer.json) apply NFKC, so
full-width punctuation tokenizes differently there (test_transformers_5_deberta_tokenizer_differs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2

from tests.conftest import export_repository, start_server
from tests.hf_checkpoints import FAMILIES, write_family
from tests.hf_pipeline import run_pipeline
from tests.reference_venv import run_json, venv_python
from zsc_client import ZeroShotClient

TOLERANCE = 2e-4
LONG_TEXT = "The app crashes every time I open the settings page, and support never answers my mails. " * 80
TWENTY_FOUR = ["billing", "bug report", "praise", "refund", "delivery", "login", "password", "invoice",
               "price", "discount", "membership", "points", "service", "phone", "repair", "complaint",
               "question", "suggestion", "night mode", "feature", "crash", "settings", "subscription", "other"]
CASES = {
    "default template": dict(text="I was charged twice for my subscription this month.",
                             candidate_labels=["billing", "bug report", "praise"]),
    "custom template, multi-label, label string": dict(
        text="The app crashes every time I open the settings page.", candidate_labels="bug report, refund, praise",
        hypothesis_template="The customer writes about {}.", multi_label=True),
    "one label": dict(text="Great service, thank you so much!", candidate_labels=["praise"]),
    "long text truncates": dict(text=LONG_TEXT, candidate_labels=["bug report", "billing", "praise"]),
    "24 labels": dict(text="The delivery was fast but the refund is still missing.", candidate_labels=TWENTY_FOUR),
    "full-width punctuation": dict(text="我的快递三天了还没到，请帮我查一下物流！",
                                   candidate_labels=["物流", "退款", "投诉"]),
}
# transformers 5 rebuilds DeBERTa-v2's tokenizer with NFC: compared with 4.57 only (module docstring)
TRANSFORMERS_5_DISAGREES = {"deberta-v3"}


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf-families")
    return {name: write_family(family, root / name) for name, family in FAMILIES.items()}


@pytest.fixture(scope="session")
def transformers4_results(checkpoints) -> dict | None:
    """transformers 4.57's pipeline on every family and case, in one run of .venv-modelscope."""
    python = venv_python("ZSC_MODELSCOPE_PYTHON")
    if python is None:
        return None
    runner = Path(__file__).resolve().parents[1] / "hf_pipeline.py"
    request = {"models": {name: {"model": str(path), "cases": list(CASES.values())}
                          for name, path in checkpoints.items()}}
    return run_json(python, runner, request)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, checkpoints, tmp_path_factory):
    """One family exported and served (torn down before the next family starts), with transformers 5's
    pipeline answers for every case."""
    name = request.param
    repository = export_repository(str(checkpoints[name]), tmp_path_factory.mktemp(f"repo-{name}"),
                                   max_length="model")
    server = start_server(f"hf-{name}", repository)
    try:
        expected = dict(zip(CASES, run_pipeline(str(checkpoints[name]), list(CASES.values()))))
        yield name, server, repository, expected
    finally:
        server.stop()


def assert_same_answer(got, want: dict, what: str) -> None:
    assert list(got.labels) == want["labels"], f"{what}: order {got.labels} != {want['labels']}"
    worst = max(abs(a - b) for a, b in zip(got.scores, want["scores"]))
    assert worst <= TOLERANCE, f"{what}: scores {got.scores} vs {want['scores']} (|Δ| {worst:.1e})"


@pytest.mark.parametrize("case", list(CASES))
def test_matches_transformers_pipeline(family, transformers4_results, protocol, case):
    name, server, _, transformers5 = family
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with ZeroShotClient(url, protocol) as client:
        got = client.classify(**CASES[case])
    compared = 0
    if name not in TRANSFORMERS_5_DISAGREES:
        assert_same_answer(got, transformers5[case], "transformers 5")
        compared += 1
    if transformers4_results is not None:
        assert_same_answer(got, transformers4_results[name][list(CASES).index(case)], "transformers 4.57")
        compared += 1
    if not compared:
        pytest.skip("DeBERTa's reference is transformers 4.57: run `make setup-modelscope` or use `make test`")


def test_encoder_takes_the_models_inputs_and_truncation_is_reached(family, checkpoints):
    """The ensemble passes exactly the inputs the exported graph declares (no token_type_ids for
    RoBERTa, XLM-R, DeBERTa-v3, BART, ModernBERT), and the long case really truncates."""
    name, _, repository, _ = family
    from google.protobuf import text_format

    encoder = text_format.Parse((repository / "encoder" / "config.pbtxt").read_text(),
                                model_config_pb2.ModelConfig())
    assert tuple(i.name for i in encoder.input) == FAMILIES[name].inputs
    exported = json.loads((repository / "encoder" / "export.json").read_text())
    assert exported["max_length"] == FAMILIES[name].max_length
    tokenizer = Tokenizer.from_file(str(repository / "preprocess" / "1" / "tokenizer.json"))
    assert len(tokenizer.encode(LONG_TEXT).ids) > FAMILIES[name].max_length


def test_transformers_5_deberta_tokenizer_differs(checkpoints):
    """Why DeBERTa's reference is transformers 4.57: transformers 5 keeps '，' (NFC, then [UNK]) where the
    checkpoint's sentencepiece model and tokenizer.json make it ',' (NFKC)."""
    from transformers import AutoTokenizer

    directory = checkpoints["deberta-v3"]
    text = CASES["full-width punctuation"]["text"]
    served = Tokenizer.from_file(str(directory / "tokenizer.json")).encode(text).ids
    assert AutoTokenizer.from_pretrained(directory)(text)["input_ids"] != served
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(model_file=str(directory / "spm.model")).encode(text, out_type=str)
    assert "," in pieces and "，" not in pieces

