"""Our tokenizer.json + post-processor pairing equals the slow BertTokenizer with only_first truncation."""

import pytest
from transformers import BertTokenizer

from export.random_checkpoint import write_vocab
from export.tokenizer import TokenizerFacts, write_tokenizer_json
from zsc_server.scoring import InputError
from zsc_server.tokenization import PairTokenizer, pick_bucket

TEXTS = ["我的快递三天了还没到，请帮我查一下物流。", "The App CRASHES every time!", "投诉" * 60, "naïve café 123"]
HYPOTHESES = ["咨询", "这是一条关于投诉的文本", "bug report"]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    write_vocab(root / "vocab.txt")
    write_tokenizer_json(root, TokenizerFacts(lowercase=True), destination=root / "tokenizer.json")
    ours = PairTokenizer(root / "tokenizer.json", max_length=64, buckets=(16, 32, 64))
    return ours, BertTokenizer(str(root / "vocab.txt"), do_lower_case=True)


@pytest.mark.parametrize("text", TEXTS)
def test_pairs_match_bert_tokenizer(tokenizers, text):
    ours, slow = tokenizers
    batch = ours.encode_pairs(text, HYPOTHESES)
    want = slow([[text, h] for h in HYPOTHESES], truncation="only_first", max_length=64, padding=True)
    for row, ids in enumerate(want["input_ids"]):
        n = len([i for i in ids if i != slow.pad_token_id])
        assert batch.input_ids[row, :n].tolist() == ids[:n]
        assert batch.token_type_ids[row, :n].tolist() == want["token_type_ids"][row][:n]
        assert batch.attention_mask[row].sum() == n
    assert batch.input_ids.shape[1] in (16, 32, 64)


def test_sentences_match_bert_tokenizer(tokenizers):
    ours, slow = tokenizers
    batch = ours.encode_sentences(TEXTS)
    want = slow(TEXTS, truncation=True, max_length=64)
    for row, ids in enumerate(want["input_ids"]):
        assert batch.input_ids[row, : len(ids)].tolist() == ids


def test_bucket_is_the_smallest_that_fits(tokenizers):
    ours, _ = tokenizers
    assert ours.encode_pairs("你好", ["咨询"]).input_ids.shape == (1, 16)
    assert pick_bucket(17, (16, 32)) == 32
    with pytest.raises(ValueError):
        pick_bucket(33, (16, 32))


def test_hypothesis_too_long_is_an_input_error(tokenizers):
    ours, _ = tokenizers
    with pytest.raises(InputError, match="HYPOTHESIS_TEMPLATE: the hypothesis for label 0"):
        ours.encode_pairs("你好", ["投诉" * 40])
