"""Preprocess limits and the client's request/response helpers, without a server."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from zsc_client.cli import format_result
from zsc_client.cli import main as cli_main
from zsc_client.errors import InvalidInputError, ServerUnavailableError, ZeroShotClientError, translate
from zsc_client.request import ClassificationResult, build_inputs, split_url
from zsc_server.preprocess import Preprocessor
from zsc_server.scoring import InputError
from zsc_server.settings import ScoringMode, ScoringSettings


def test_limits_name_their_setting(tokenizer_json):
    pre = Preprocessor(ScoringSettings(max_labels=3, max_text_bytes=10, max_length=32), tokenizer_json)
    with pytest.raises(InputError, match="TEXT: is 12 bytes; the limit is 10 bytes"):
        pre.prepare("投诉投诉".encode(), [b"a"])
    with pytest.raises(InputError, match="CANDIDATE_LABELS: has 4 labels; the limit is 3"):
        pre.prepare(b"hi", [b"a", b"b", b"c", b"d"])
    with pytest.raises(InputError, match="CANDIDATE_LABELS: has 4 labels"):
        pre.prepare(b"hi", [b"a,b,c,d"])
    # one huge label used to be tokenized in full (20 s for 10 MB) before being refused as too long
    small = Preprocessor(ScoringSettings(max_labels_bytes=8, max_template_bytes=8, max_length=32), tokenizer_json)
    with pytest.raises(InputError, match="CANDIDATE_LABELS: are 9 bytes in all; the limit is 8 bytes"):
        small.prepare(b"hi", [b"a" * 9])
    with pytest.raises(InputError, match="CANDIDATE_LABELS: are 9 bytes in all"):
        small.prepare(b"hi", [b"abcd", b"efghi"])
    # a template repeating '{}' multiplied the labels' size (33 MB of hypotheses, 22 s, from 64 KB)
    with pytest.raises(InputError, match="HYPOTHESIS_TEMPLATE: puts each label in 4 times: the hypotheses "
                                         "would be 32 bytes, over the limit of 24 bytes"):
        small.prepare(b"hi", [b"abcd", b"efgh"], b"{}{}{}{}")
    assert small.prepare(b"hi", [b"abcd", b"efgh"], b"{}{}").labels == ["abcd", "efgh"]


def test_prepare_modes(tokenizer_json):
    nli = Preprocessor(ScoringSettings(max_length=32), tokenizer_json)
    out = nli.prepare("你好".encode(), ["咨询,投诉".encode()], "这是{}".encode(), None)
    assert out.labels == ["咨询", "投诉"] and out.multi_label is False
    assert out.encoded.input_ids.shape == (2, 16)
    assert nli.prepare(b"hi", [b"a"]).multi_label is True  # one label scores as multi-label
    emb = Preprocessor(ScoringSettings(mode=ScoringMode.EMBEDDING, max_length=32), tokenizer_json)
    assert emb.prepare(b"hi", [b"a", b"b"]).encoded.input_ids.shape[0] == 3  # text + 2 labels


def test_windows_may_use_the_rows_the_encoder_takes_from_one_request(tokenizer_json):
    """windows x labels are bounded by the encoder's batch (export writes it: max_labels + 1, or a GPU profile's
    larger batch), not by max_labels + 1 alone."""
    text, labels = ("the app crashes again " * 10).encode(), [b"a", b"b", b"c"]
    settings = ScoringSettings(max_length=32, max_labels=3, max_windows=8)
    with pytest.raises(InputError, match=r"TEXT: takes \d+ encoder rows .* over the 4 one request may use"):
        Preprocessor(settings, tokenizer_json).prepare(text, labels)
    wide = Preprocessor(dataclasses.replace(settings, max_rows=64), tokenizer_json).prepare(text, labels)
    assert 4 < wide.encoded.input_ids.shape[0] <= 24


@pytest.mark.parametrize("url, protocol, expected", [
    ("localhost", "grpc", ("localhost:8001", False)),
    ("http://h:9000/", "http", ("h:9000", False)),
    ("https://h", "http", ("h:8000", True)),
    ("[::1]", "grpc", ("[::1]:8001", False)),
    ("[::1]:9001", "grpc", ("[::1]:9001", False)),
])
def test_split_url(url, protocol, expected):
    assert split_url(url, protocol) == expected


@pytest.mark.parametrize("url", ["localhost:notaport", "h:0", "h:65536", "http://h:"])
def test_split_url_refuses_a_port_that_is_no_port(url):
    with pytest.raises(ValueError, match="the port must be a number from 1 to 65535"):
        split_url(url, "http")


def test_a_list_of_one_label_with_a_comma_is_refused_not_split():
    """One element is a label string to the server, split on ',' and '，': ['New York, USA'] would come back
    as two labels."""
    for labels in (["New York, USA"], ["咨询，投诉"], [b"a,b"]):
        with pytest.raises(InvalidInputError, match="give each label as its own list item"):
            build_inputs(httpclient, "t", labels, None, False)
    assert build_inputs(httpclient, "t", ["New York, USA", "Paris"], None, False)[1].shape() == [2]
    assert build_inputs(httpclient, "t", "New York, USA", None, False)[1].shape() == [1]  # a string: split


def test_build_inputs_sends_one_string_unsplit():
    inputs = build_inputs(httpclient, "t", "a,b", None, True)
    assert [i.name() for i in inputs] == ["TEXT", "CANDIDATE_LABELS", "MULTI_LABEL"]
    assert inputs[1].shape() == [1]
    with_template = build_inputs(httpclient, "t", ["a", "b"], "x{}", False)
    assert [i.name() for i in with_template][2] == "HYPOTHESIS_TEMPLATE"
    assert with_template[1].shape() == [2]


def test_translate_errors():
    assert isinstance(translate(InferenceServerException("bad", status="400")), InvalidInputError)
    assert isinstance(translate(InferenceServerException("x", status="StatusCode.INVALID_ARGUMENT")),
                      InvalidInputError)
    assert isinstance(translate(InferenceServerException("x", status="StatusCode.UNAVAILABLE")),
                      ServerUnavailableError)
    assert isinstance(translate(ConnectionRefusedError("refused")), ServerUnavailableError)
    # a stopping server cancels the calls it holds: retry later, like any restart
    assert isinstance(translate(InferenceServerException("CANCELLED", status="StatusCode.CANCELLED")),
                      ServerUnavailableError)
    assert type(translate(InferenceServerException("x", status="500"))) is ZeroShotClientError


def test_format_result():
    text = format_result(ClassificationResult("t", ["投诉", "咨询"], [0.75, 0.25], 12.3, 4.5))
    assert "投诉" in text.splitlines()[1] and "0.7500" in text and "round trip 12.3 ms, inside Triton 4.5 ms" in text


@pytest.mark.parametrize("error", [
    InferenceServerException("Request for unknown model: 'zero_shot' has no available versions", "400"),
    InferenceServerException("Stub process 'encoder_0_0' is not healthy.", "500"),
    type("HTTPConnectionClosed", (Exception,), {})("connection closed."),
])
def test_what_triton_says_while_restarting_is_unavailable(error):
    # seen in tests/integration/test_faults.py while a server restarts or a stub is dead: retry later
    assert isinstance(translate(error), ServerUnavailableError)



@pytest.mark.parametrize("argv, message", [
    (["health", "--protocol", "http", "--url", "localhost:notaport"], "--url 'localhost:notaport': the port must"),
    (["classify", "--labels", "a", "--url", "h:70000", "x"], "--url 'h:70000': the port must"),
    (["webui", "--triton", "h:x"], "--triton 'h:x': the port must"),
])
def test_cli_names_a_url_it_cannot_use_without_a_traceback(capsys, argv, message):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zsc: error: {message} be a number from 1 to 65535") and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["webui", "--port", "99999"], "--port: must be a port number from 1 to 65535, got 99999"),
    (["health", "--timeout-s", "0"], "--timeout-s: must be more than 0 seconds, got 0"),
])
def test_cli_refuses_out_of_range_flags_naming_them(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_an_empty_standard_input(capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("\n  \r\n"))
    assert cli_main(["classify", "--labels", "a,b", "-"]) == 2
    assert capsys.readouterr().err == "zsc: error: no text on standard input (one text per line)\n"


def test_an_answer_without_labels_or_scores_is_a_client_error_naming_them():
    """What a server that is not this ensemble, or a response cache holding another caller's answer cut to
    LABELS, would send (the fronts now refuse such requests, so a stand-in answer shows it)."""
    from zsc_client.request import parse_result

    class Answer:
        def __init__(self, **arrays):
            self.arrays = arrays

        def as_numpy(self, name):
            return self.arrays.get(name)

    with pytest.raises(ZeroShotClientError, match="the answer has no SCORES"):
        parse_result(Answer(LABELS=np.array([b"a"], dtype=np.object_)), "t", 1.0)
    with pytest.raises(ZeroShotClientError, match="no LABELS or SCORES"):
        parse_result(Answer(), "t", 1.0)
