"""Tiny random NLI checkpoints of each Hugging Face family export supports, saved as hub snapshots are.

Weights: transformers' own classes with random weights (hidden 32, 2 layers), `save_pretrained`.
Tokenizers are trained here on a small multilingual corpus and saved the way the real checkpoints were:
- DeBERTa-v3 and XLM-R: a SentencePiece unigram model trained with sentencepiece (NFKC rules, as the real
  ones), `spm.model` / `sentencepiece.bpe.model`, with a tokenizer.json converted by transformers
  (DeBERTa, as MoritzLaurer's checkpoints ship it) or none (XLM-R, as joeddav/xlm-roberta-large-xnli);
- RoBERTa and BART: a byte-level BPE trained with `tokenizers` (vocab.json + merges.txt), with the
  tokenizer.json transformers saves (BART, as facebook/bart-large-mnli) or without (RoBERTa);
- ModernBERT: a byte-level BPE with [CLS]/[SEP] and only a tokenizer.json, as answerdotai's;
- BERT and ELECTRA: a WordPiece vocab.txt.
Each family uses one of the label orders real checkpoints have; ModernBERT is 2-class, as the
zeroshot-v2.0 models (entailment / not_entailment).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, processors
from tokenizers.implementations import ByteLevelBPETokenizer

from export.random_checkpoint import CORPUS, ENGLISH, write_vocab

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            initializer_range=0.3)
TRAINING_TEXTS = [
    "The app crashes every time I open the settings page.",
    "I was charged twice for my subscription this month, please refund me.",
    "Great service, thank you so much! The delivery was fast.",
    "This example is about billing. This example is a complaint about delivery.",
    "The customer writes about a refund, a bug report, praise or a question.",
    "我的快递三天了还没到，请帮我查一下物流。这个产品质量太差了，我要投诉！",
    "希望增加夜间模式功能。客服电话打不通？退款、账单、支付问题。",
    "Das ist ein Beispiel über Rechnungen. C'est une question sur la livraison. ¿Dónde está mi pedido?",
    CORPUS, ENGLISH,
]
BPE_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    model_type: str
    label2id: dict[str, int]
    inputs: tuple[str, ...]  # what the exported encoder must take
    max_length: int  # where transformers' pipeline truncates (the tokenizer's model_max_length)
    stands_for: str


CNE = {"contradiction": 0, "neutral": 1, "entailment": 2}
ENC = {"entailment": 0, "neutral": 1, "contradiction": 2}
CEN = {"contradiction": 0, "entailment": 1, "neutral": 2}
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
NO_TYPES = ("input_ids", "attention_mask")
FAMILIES = {
    family.name: family for family in [
        Family("bert", "bert", CNE, BERT_INPUTS, 512, "BERT-base/large MNLI (named labels)"),
        Family("electra", "electra", {"ENTAILMENT": 0, "NEUTRAL": 1, "CONTRADICTION": 2}, BERT_INPUTS, 512,
               "ELECTRA MNLI (e.g. howey/electra-base-mnli)"),
        Family("roberta", "roberta", CEN, NO_TYPES, 512, "cross-encoder/nli-roberta-base"),
        Family("xlm-roberta", "xlm-roberta", CNE, NO_TYPES, 512, "joeddav/xlm-roberta-large-xnli"),
        Family("deberta-v3", "deberta-v2", ENC, NO_TYPES, 512,
               "MoritzLaurer/DeBERTa-v3-large-mnli-fever-anli-ling-wanli"),
        Family("bart", "bart", CNE, NO_TYPES, 1024, "facebook/bart-large-mnli"),
        Family("modernbert", "modernbert", {"entailment": 0, "not_entailment": 1}, NO_TYPES, 512,
               "MoritzLaurer/ModernBERT-large-zeroshot-v2.0"),
    ]
}


def write_family(family: Family, directory: Path, seed: int = 3) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    special_ids = TOKENIZERS[family.model_type](directory, family.max_length)
    config = _config(family, special_ids)
    write_random_classifier(config, directory, seed)
    return directory


def write_random_classifier(config, directory: Path, seed: int) -> None:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    # Logits of a few units: scores differ clearly between labels without saturating at 0 or 1.
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == config.num_labels]
    with torch.no_grad():
        head[-1].weight.mul_(3.0)
    model.save_pretrained(directory)


def _config(family: Family, ids: dict):
    labels = dict(label2id=family.label2id, id2label={i: label for label, i in family.label2id.items()})
    return backbone_config(family.model_type, ids, **labels)


def backbone_config(model_type: str, ids: dict, **fields):
    """transformers' config of a tiny `model_type` model for the ids a TOKENIZERS entry returned, with `fields`
    (e.g. the NLI labels) added; also the backbone of the GLiClass checkpoints (tests/gliclass_pipeline.py)."""
    from transformers import AutoConfig

    tokens = dict(vocab_size=ids["vocab_size"], pad_token_id=ids["pad"])
    if model_type == "bart":
        sizes = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, init_std=0.3)
        return AutoConfig.for_model("bart", **sizes, **fields, **tokens, max_position_embeddings=1024,
                                    bos_token_id=ids["cls"], eos_token_id=ids["sep"],
                                    decoder_start_token_id=ids["sep"], forced_eos_token_id=ids["sep"])
    extra = {
        "bert": dict(max_position_embeddings=512, type_vocab_size=2),
        "electra": dict(max_position_embeddings=512, type_vocab_size=2, embedding_size=32),
        "roberta": dict(max_position_embeddings=514, type_vocab_size=1, bos_token_id=ids["cls"],
                        eos_token_id=ids["sep"]),
        "xlm-roberta": dict(max_position_embeddings=514, type_vocab_size=1, bos_token_id=ids["cls"],
                            eos_token_id=ids["sep"]),
        "deberta-v2": dict(max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
                           position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
                           pos_att_type=["p2c", "c2p"], position_biased_input=False, max_relative_positions=-1),
        "modernbert": dict(max_position_embeddings=8192, local_attention=128, global_attn_every_n_layers=2,
                           cls_token_id=ids["cls"], sep_token_id=ids["sep"], bos_token_id=ids["cls"],
                           eos_token_id=ids["sep"], classifier_pooling="mean"),
    }[model_type]
    return AutoConfig.for_model(model_type, **TINY, **fields, **tokens, **extra)


# tokenizer_config.json as transformers 4 wrote it for these checkpoints (transformers 5's save_pretrained
# writes a list for extra_special_tokens, which transformers 4 cannot read)
ROBERTA_TOKENS = dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                      pad_token="<pad>", mask_token="<mask>")
DEBERTA_TOKENS = dict(bos_token="[CLS]", eos_token="[SEP]", sep_token="[SEP]", cls_token="[CLS]", unk_token="[UNK]",
                      pad_token="[PAD]", mask_token="[MASK]")


def _tokenizer_config(directory: Path, **fields) -> None:
    (directory / "tokenizer_config.json").write_text(json.dumps(fields, indent=2), encoding="utf-8")


def _save_tokenizer_json(directory: Path) -> None:
    """The tokenizer.json transformers makes of the files written so far."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(directory).backend_tokenizer.save(str(directory / "tokenizer.json"))


def wordpiece(directory: Path, max_length: int, tokenizer_class: str) -> dict:
    vocab = write_vocab(directory / "vocab.txt")
    _tokenizer_config(directory, tokenizer_class=tokenizer_class, do_lower_case=True, model_max_length=max_length)
    return dict(vocab_size=len(vocab), pad=vocab.index("[PAD]"), cls=vocab.index("[CLS]"), sep=vocab.index("[SEP]"))


def byte_level_bpe(directory: Path, max_length: int, tokenizer_class: str, keep_tokenizer_json: bool) -> dict:
    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator(TRAINING_TEXTS * 5, vocab_size=600, min_frequency=1, special_tokens=BPE_SPECIALS,
                                show_progress=False)
    trained.save_model(str(directory))  # vocab.json + merges.txt
    _tokenizer_config(directory, tokenizer_class=tokenizer_class, model_max_length=max_length, errors="replace",
                      add_prefix_space=False, trim_offsets=True, **ROBERTA_TOKENS)
    if keep_tokenizer_json:
        _save_tokenizer_json(directory)
    vocab = trained.get_vocab()
    return dict(vocab_size=len(vocab), pad=vocab["<pad>"], cls=vocab["<s>"], sep=vocab["</s>"])


def modernbert_bpe(directory: Path, max_length: int) -> dict:
    """answerdotai/ModernBERT's layout: a byte-level BPE with BERT's special tokens, tokenizer.json only."""
    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    trained = ByteLevelBPETokenizer(add_prefix_space=False)
    trained.train_from_iterator(TRAINING_TEXTS * 5, vocab_size=600, min_frequency=1, special_tokens=specials,
                                show_progress=False)
    tokenizer: Tokenizer = trained._tokenizer
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer.save(str(directory / "tokenizer.json"))
    _tokenizer_config(directory, tokenizer_class="PreTrainedTokenizerFast", model_max_length=max_length,
                      model_input_names=["input_ids", "attention_mask"], clean_up_tokenization_spaces=True,
                      cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]", unk_token="[UNK]")
    return dict(vocab_size=tokenizer.get_vocab_size(), pad=tokenizer.token_to_id("[PAD]"), cls=cls, sep=sep)


def sentencepiece_unigram(directory: Path, filename: str, **pieces) -> None:
    import sentencepiece

    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXTS * 20), model_prefix=str(directory / "spm"), model_type="unigram",
        vocab_size=400, hard_vocab_limit=False, character_coverage=1.0, num_threads=1, minloglevel=2, **pieces)
    (directory / "spm.vocab").unlink()
    (directory / "spm.model").rename(directory / filename)


def deberta_v3(directory: Path, max_length: int) -> dict:
    from export.tokenizer import convert_slow_tokenizer

    sentencepiece_unigram(directory, "spm.model", pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]",
                          bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]")
    _tokenizer_config(directory, tokenizer_class="DebertaV2Tokenizer", do_lower_case=False, split_by_punct=False,
                      vocab_type="spm", model_max_length=max_length, **DEBERTA_TOKENS)
    # The hub's tokenizer.json: transformers' DebertaV2Converter (NFKC from the model), not the NFC
    # normalizer transformers 5 writes for this class.
    from transformers import AutoTokenizer

    slow = AutoTokenizer.from_pretrained(directory)
    convert_slow_tokenizer(directory, slow).save(str(directory / "tokenizer.json"))
    return dict(vocab_size=len(slow), pad=slow.pad_token_id, cls=slow.cls_token_id, sep=slow.sep_token_id)


def xlm_roberta(directory: Path, max_length: int) -> dict:
    from transformers import AutoTokenizer

    sentencepiece_unigram(directory, "sentencepiece.bpe.model")  # <unk> 0, <s> 1, </s> 2 as XLM-R's
    _tokenizer_config(directory, tokenizer_class="XLMRobertaTokenizer", model_max_length=max_length,
                      **ROBERTA_TOKENS)
    slow = AutoTokenizer.from_pretrained(directory)
    return dict(vocab_size=len(slow), pad=slow.pad_token_id, cls=slow.cls_token_id, sep=slow.sep_token_id)


TOKENIZERS = {
    "bert": lambda d, n: wordpiece(d, n, "BertTokenizer"),
    "electra": lambda d, n: wordpiece(d, n, "ElectraTokenizer"),
    "roberta": lambda d, n: byte_level_bpe(d, n, "RobertaTokenizer", keep_tokenizer_json=False),
    "bart": lambda d, n: byte_level_bpe(d, n, "BartTokenizer", keep_tokenizer_json=True),
    "modernbert": modernbert_bpe,
    "deberta-v2": deberta_v3,
    "xlm-roberta": xlm_roberta,
}


def write_sentence_transformers(directory: Path, pooling: str = "cls", max_seq_length: int = 128,
                                seed: int = 4) -> Path:
    """A sentence-transformers checkpoint on a RoBERTa encoder: Transformer, Pooling (`pooling`: 'cls' or
    'mean'), Normalize, as e.g. BAAI/bge-* (CLS, normalized) or all-distilroberta-v1 (mean, normalized)."""
    from transformers import AutoConfig, AutoModel

    directory.mkdir(parents=True, exist_ok=True)
    ids = byte_level_bpe(directory, 512, "RobertaTokenizer", keep_tokenizer_json=True)
    config = AutoConfig.for_model("roberta", **TINY, vocab_size=ids["vocab_size"], pad_token_id=ids["pad"],
                                  bos_token_id=ids["cls"], eos_token_id=ids["sep"], max_position_embeddings=514,
                                  type_vocab_size=1)
    torch.manual_seed(seed)
    AutoModel.from_config(config, add_pooling_layer=False).eval().save_pretrained(directory)
    modules = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    (directory / "modules.json").write_text(json.dumps([
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(modules)], indent=2), encoding="utf-8")
    (directory / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}), encoding="utf-8")
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": TINY["hidden_size"], "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}, indent=2), encoding="utf-8")
    (directory / "2_Normalize").mkdir(exist_ok=True)
    return directory
