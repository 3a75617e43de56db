"""The preprocess's validation held to the independent oracle (tests/request_properties.py) without a server:
many generated requests, hostile and plausible, each either refused naming an input at fault or prepared with
exactly the labels the oracle expects. The fuzz tests (tests/integration/test_fuzz.py) check fewer of them
through the served ensemble, for the status each protocol maps a refusal to."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from tests.request_properties import HOSTILE, MULTI_LABELS, PLAUSIBLE, expected_answer
from zsc_server.preprocess import Preprocessor
from zsc_server.scoring import InputError
from zsc_server.settings import ScoringSettings

SERVED = ScoringSettings(max_length=64, max_labels=64)  # the limits of the integration tests' StructBERT export
EXAMPLES = int(os.environ.get("ZSC_FUZZ_EXAMPLES", "0")) or 400


@pytest.fixture(scope="module")
def preprocess(tokenizer_json):
    oracle_tokenizer = Tokenizer.from_file(str(tokenizer_json))
    oracle_tokenizer.no_truncation()
    oracle_tokenizer.no_padding()
    return Preprocessor(SERVED, tokenizer_json), oracle_tokenizer


@st.composite
def contents(draw) -> tuple[bytes, list[bytes], bytes | None, bool | None]:
    parts = draw(st.sampled_from([PLAUSIBLE, HOSTILE]))
    return draw(parts["text"]), draw(parts["labels"]), draw(parts["template"]), draw(MULTI_LABELS)


@settings(max_examples=EXAMPLES, deadline=None, derandomize="ZSC_FUZZ_EXAMPLES" not in os.environ,
          database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.large_base_example, HealthCheck.function_scoped_fixture])
@given(request=contents())
def test_the_preprocess_refuses_what_the_oracle_faults_and_prepares_the_rest(preprocess, request):
    pre, tokenizer = preprocess
    text, labels, template, multi_label = request
    expected = expected_answer(text, labels, template, multi_label, SERVED, tokenizer)
    try:
        prepared = pre.prepare(text, labels, template, multi_label)
    except InputError as exc:
        assert expected.faults, f"a valid request was refused: {exc}"
        assert exc.field in expected.faults, f"{exc.field} named, the oracle faults {sorted(expected.faults)}: {exc}"
        event(f"refused: {exc.field}")
        return
    assert not expected.faults, f"a request with bad {sorted(expected.faults)} was prepared"
    assert prepared.labels == expected.labels and prepared.multi_label == expected.multi_label
    # NLI: one (text, hypothesis) pair per label, each within max_length
    assert len(prepared.hypotheses) == prepared.encoded.input_ids.shape[0] == len(prepared.labels)
    assert prepared.encoded.input_ids.shape[1] <= SERVED.max_length
    event("prepared")
