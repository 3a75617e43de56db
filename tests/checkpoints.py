"""Tiny random checkpoints written by the tests themselves (no hub, no downloads).

- ModelScope layout: configuration.json, config.json (model_type structbert), pytorch_model.bin
  (bert.* / classifier.* keys, as DAMO's StructBERT zero-shot checkpoints), vocab.txt.
- Hugging Face layout: save_pretrained() of a BertForSequenceClassification whose label2id puts
  entailment at index 2 (as most MNLI checkpoints do), plus vocab.txt / tokenizer_config.json.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

# Every character / word the tests send, so tokenization rarely needs [UNK].
CORPUS = (
    "我的快递三天了还没到请帮我查一下物流这个产品质量太差了要投诉希望增加夜间模式功能建议咨询"
    "退款账单支付问题表扬服务态度很好客服电话打不通售后维修发票价格优惠活动会员积分登录密码"
    "这是一条关于的文本类型主题是用户在说什么情绪正面负面中性"
)
ENGLISH = (
    "the app crashes every time i open settings page this text is about a question complaint "
    "suggestion billing refund delivery praise bug report love product great service slow"
)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_vocab(path: Path) -> list[str]:
    tokens = list(SPECIAL)
    tokens += sorted(set(CORPUS))
    tokens += sorted(set(ENGLISH.split()))
    tokens += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
    tokens += list(string.digits) + list(string.punctuation) + list("，。！？：；、（）")
    tokens = list(dict.fromkeys(tokens))
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


def tiny_bert_config(vocab_size: int, **overrides) -> dict:
    config = dict(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=512, type_vocab_size=2,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        initializer_range=0.3, layer_norm_eps=1e-12, num_labels=3,
    )
    config.update(overrides)
    return config


def _random_classifier(config: dict, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**config))
    # Spread the head's outputs so label scores differ clearly between labels.
    with torch.no_grad():
        model.classifier.weight.mul_(10.0)
    return model.eval()


def write_modelscope_structbert(directory: Path, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(directory / "vocab.txt")
    config = tiny_bert_config(len(vocab))
    model = _random_classifier(config, seed)
    ms_config = {
        **config, "model_type": "structbert", "architectures": ["SbertForSequenceClassification"],
        "id2label": {"0": "entailment", "1": "neutral", "2": "contradiction"},
    }
    ms_config.pop("num_labels")
    (directory / "config.json").write_text(json.dumps(ms_config, indent=2), encoding="utf-8")
    (directory / "configuration.json").write_text(json.dumps({
        "framework": "pytorch", "task": "zero-shot-classification",
        "preprocessor": {"type": "zero-shot-cls-tokenizer"},
        "model": {"type": "structbert"}, "pipeline": {"type": "zero-shot-classification"},
    }, indent=2), encoding="utf-8")
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory


def write_huggingface_nli(directory: Path, seed: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(directory / "vocab.txt")
    label2id = {"contradiction": 0, "neutral": 1, "entailment": 2}
    config = tiny_bert_config(
        len(vocab), label2id=label2id, id2label={v: k for k, v in label2id.items()})
    model = _random_classifier(config, seed)
    model.save_pretrained(directory)
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}), encoding="utf-8")
    return directory
