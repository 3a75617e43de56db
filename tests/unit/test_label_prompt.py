"""GLiClass prompts (zsc_server.label_prompt) and their scoring (zsc_server.postprocess), without a server.

The prompt layout against the gliclass package's own pipeline is tested end to end in
tests/integration/test_gliclass.py; here: rows, truncation that keeps every label, refusals, shapes.
"""

import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.models import WordLevel

from export.random_checkpoint import write_vocab
from zsc_server.label_prompt import MARKERS, LabelPromptTokenizer, label_rows
from zsc_server.postprocess import score_labels
from zsc_server.preprocess import Preprocessor
from zsc_server.scoring import InputError, label_logit_scores
from zsc_server.settings import ScoringMode, ScoringSettings

MAX_LENGTH = 32


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    directory = tmp_path_factory.mktemp("gliclass-tokenizer")
    write_vocab(directory / "vocab.txt")
    built = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=True)
    built.add_special_tokens([AddedToken(marker, special=True) for marker in MARKERS])
    built._tokenizer.save(str(directory / "tokenizer.json"))
    return directory / "tokenizer.json"


def prompts(tokenizer_json, labels_per_row=3, prompt_first=False):
    return LabelPromptTokenizer(tokenizer_json, MAX_LENGTH, (16, MAX_LENGTH), labels_per_row, prompt_first)


def tokens(tokenizer, row):
    return [tokenizer._tokenizer.id_to_token(int(i)) for i in row if i]


def pieces(tokenizer, text):
    return tokenizer._tokenizer.encode(text, add_special_tokens=False).tokens


def test_labels_fill_rows_in_order():
    assert label_rows(list("abcdefg"), 3) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    assert label_rows(["a"], 3) == [["a"]]


@pytest.mark.parametrize("prompt_first", [False, True])
def test_each_row_holds_the_text_and_its_labels_behind_markers(tokenizer_json, prompt_first):
    tokenizer = prompts(tokenizer_json, prompt_first=prompt_first)
    encoded = tokenizer.encode("the app crashes", ["bug", "price", "refund", "login"])
    assert encoded.input_ids.shape[0] == 2
    first, second = (tokens(tokenizer, row) for row in encoded.input_ids)
    text = pieces(tokenizer, "the app crashes")
    labels = ["<<LABEL>>", *pieces(tokenizer, "bug"), "<<LABEL>>", *pieces(tokenizer, "price"), "<<LABEL>>",
              *pieces(tokenizer, "refund"), "<<SEP>>"]
    assert first == (["[CLS]", *labels, *text, "[SEP]"] if prompt_first else ["[CLS]", *text, *labels, "[SEP]"])
    assert second == (["[CLS]", "<<LABEL>>", *pieces(tokenizer, "login"), "<<SEP>>", *text, "[SEP]"] if prompt_first
                      else ["[CLS]", *text, "<<LABEL>>", *pieces(tokenizer, "login"), "<<SEP>>", "[SEP]"])


@pytest.mark.parametrize("prompt_first", [False, True])
def test_a_long_text_gives_up_its_last_tokens_and_every_label_keeps_its_marker(tokenizer_json, prompt_first):
    tokenizer = prompts(tokenizer_json, prompt_first=prompt_first)
    text = "the app crashes " * 20
    encoded = tokenizer.encode(text, ["bug", "price", "refund"])
    row = tokens(tokenizer, encoded.input_ids[0])
    assert len(row) == MAX_LENGTH and int(encoded.attention_mask.sum()) == MAX_LENGTH
    labels = ["<<LABEL>>", *pieces(tokenizer, "bug"), "<<LABEL>>", *pieces(tokenizer, "price"), "<<LABEL>>",
              *pieces(tokenizer, "refund"), "<<SEP>>"]
    kept = MAX_LENGTH - 2 - len(labels)
    expected_text = pieces(tokenizer, text)[:kept]
    assert row == (["[CLS]", *labels, *expected_text, "[SEP]"] if prompt_first
                   else ["[CLS]", *expected_text, *labels, "[SEP]"])


def test_labels_that_leave_no_room_for_the_text_are_refused(tokenizer_json):
    with pytest.raises(InputError, match="CANDIDATE_LABELS: 3 labels take .* leaving no room for the text"):
        prompts(tokenizer_json).encode("the app crashes", ["bug report " * 5, "price " * 5, "refund " * 5])


@pytest.mark.parametrize("field, text, labels", [
    ("TEXT", "the app <<LABEL>> crashes", ["bug"]),
    ("CANDIDATE_LABELS", "the app crashes", ["bug", "price<<SEP>>"]),
])
def test_the_models_markers_are_refused_in_requests(tokenizer_json, field, text, labels):
    with pytest.raises(InputError, match=f"{field}: contains <<"):
        prompts(tokenizer_json).encode(text, labels)


def test_a_template_holding_a_marker_is_refused_naming_the_template(tokenizer_json):
    preprocessor = Preprocessor(ScoringSettings(mode=ScoringMode.GLICLASS, labels_per_row=3, max_length=MAX_LENGTH),
                                tokenizer_json)
    with pytest.raises(InputError, match="HYPOTHESIS_TEMPLATE: contains <<SEP>>"):
        preprocessor.prepare(b"the app crashes", [b"bug"], b"{}<<SEP>>")
    prepared = preprocessor.prepare(b"the app crashes", [b"bug", b"price", b"refund", b"login"], b"about {}")
    assert prepared.encoded.input_ids.shape[0] == 2 and preprocessor.encoder_rows(
        preprocessor.check(b"the app crashes", [b"bug", b"price", b"refund", b"login"])) == 2
    first = tokens(preprocessor.label_prompts, prepared.encoded.input_ids[0])
    about = pieces(preprocessor.label_prompts, "about")
    assert first.count("<<LABEL>>") == 3 and all(first[i + 1:i + 1 + len(about)] == about
                                                for i, token in enumerate(first) if token == "<<LABEL>>")


def test_a_marker_the_normalizer_makes_is_refused(tmp_path):
    """Full-width brackets pass the plain check, and an NFKC normalizer turns them into a marker the model
    would read: the rows' marker count gives it away."""
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0, "[PAD]": 1, "a": 2, "b": 3}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens([AddedToken(marker, special=True, normalized=True) for marker in MARKERS])
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(InputError, match="CANDIDATE_LABELS: 2 labels tokenized to 3 <<LABEL>> markers"):
        prompts(tmp_path / "tokenizer.json").encode("a \uff1c\uff1cLABEL\uff1e\uff1e b", ["a", "b"])


def test_a_tokenizer_without_markers_is_not_a_gliclass_tokenizer(tmp_path):
    write_vocab(tmp_path / "vocab.txt")
    BertWordPieceTokenizer(str(tmp_path / "vocab.txt"))._tokenizer.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="no <<LABEL>> token"):
        prompts(tmp_path / "tokenizer.json")


def test_scores_are_a_sigmoid_per_label_or_a_softmax_across_labels():
    logits = np.array([2.0, -1.0, 0.5, -80.0, -81.0, 800.0])
    multi = label_logit_scores(logits, True)
    np.testing.assert_allclose(multi, 1 / (1 + np.exp(-logits.clip(-100, 100))), rtol=1e-6)
    assert multi[3] > multi[4] > 0  # far below zero, still ranked apart
    logits = logits[:4]
    single = label_logit_scores(logits, False)
    np.testing.assert_allclose(single, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)
    assert abs(float(single.sum()) - 1) < 1e-6


def test_the_postprocess_reads_each_rows_labels_in_order():
    settings = ScoringSettings(mode=ScoringMode.GLICLASS, labels_per_row=3)
    # 4 labels in 2 rows; the second row's last two slots are empty and never read
    output = np.array([[3.0, 1.0, 2.0], [4.0, 99.0, 99.0]], dtype=np.float32)
    labels, scores = score_labels(settings, output, ["a", "b", "c", "d"], multi_label=True)
    assert labels == ["d", "a", "c", "b"]
    np.testing.assert_allclose(scores, label_logit_scores(np.array([4.0, 3.0, 2.0, 1.0]), True), rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 3), (2, 2), (3, 3)])
def test_an_output_that_does_not_hold_the_labels_rows_is_refused(shape):
    settings = ScoringSettings(mode=ScoringMode.GLICLASS, labels_per_row=3)
    with pytest.raises(InputError, match=r"encoder_output: has shape .* 4 labels take \[2, 3\]"):
        score_labels(settings, np.zeros(shape, dtype=np.float32), ["a", "b", "c", "d"], multi_label=False)


def test_gliclass_settings_need_labels_per_row_and_no_windows():
    with pytest.raises(ValueError, match="labels_per_row >= 1"):
        ScoringSettings(mode=ScoringMode.GLICLASS)
    with pytest.raises(ValueError, match="max_windows 1"):
        ScoringSettings(mode=ScoringMode.GLICLASS, labels_per_row=4, max_windows=3)
    settings = ScoringSettings(mode=ScoringMode.GLICLASS, labels_per_row=4, prompt_first=True)
    config = {"parameters": {k: {"string_value": v} for k, v in settings.to_parameters().items()}}
    assert ScoringSettings.from_model_config(config) == settings
