"""Random-weight checkpoints in the layouts export reads, written locally (no hub, no downloads):
tiny ones for the tests, StructBERT-base / -large shapes for benchmarks and load tests, where the
serving cost depends on the shape and not on the weights.

- ModelScope layout: configuration.json, config.json (model_type structbert), pytorch_model.bin
  (bert.* / classifier.* keys, as DAMO's StructBERT zero-shot checkpoints), vocab.txt.
- Hugging Face layout: save_pretrained() of a BertForSequenceClassification whose label2id puts
  entailment at index 2 (as most MNLI checkpoints do), plus vocab.txt / tokenizer_config.json.
"""

from __future__ import annotations

import argparse
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


WORKLOAD = Path(__file__).resolve().parents[1] / "loadtest" / "data" / "workload.json"


def write_vocab(path: Path, size: int | None = None) -> list[str]:
    """A vocabulary covering the test corpus and the load-test workload, padded with [unusedN]
    entries to `size` (the real Chinese StructBERT vocabulary has 21,128 entries)."""
    tokens = list(SPECIAL)
    characters = set(CORPUS)
    if WORKLOAD.is_file():
        workload = json.loads(WORKLOAD.read_text(encoding="utf-8"))
        characters |= {c for text in workload["texts"] + workload["label_pool"] for c in text if not c.isascii()}
    tokens += sorted(characters)
    tokens += sorted(set(ENGLISH.split()))
    tokens += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
    tokens += list(string.digits) + list(string.punctuation) + list("，。！？：；、（）")
    tokens = list(dict.fromkeys(tokens))
    if size is not None:
        if size < len(tokens):
            raise ValueError(f"vocabulary size {size} < the {len(tokens)} tokens it must hold")
        tokens += [f"[unused{i}]" for i in range(size - len(tokens))]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


# Encoder shapes: tiny for the tests; base / large as DAMO's StructBERT zero-shot checkpoints.
SHAPES = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 initializer_range=0.3),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 initializer_range=0.02),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                  initializer_range=0.02),
}
STRUCTBERT_VOCAB_SIZE = 21128


def bert_config(vocab_size: int, shape: str = "tiny", **overrides) -> dict:
    config = dict(
        vocab_size=vocab_size, max_position_embeddings=512, type_vocab_size=2,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
        layer_norm_eps=1e-12, num_labels=3, **SHAPES[shape],
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


def write_modelscope_structbert(directory: Path, seed: int = 0, shape: str = "tiny") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(directory / "vocab.txt", None if shape == "tiny" else STRUCTBERT_VOCAB_SIZE)
    config = bert_config(len(vocab), shape)
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


def write_huggingface_nli(directory: Path, seed: int = 1, shape: str = "tiny",
                          label2id: dict[str, int] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(directory / "vocab.txt", None if shape == "tiny" else STRUCTBERT_VOCAB_SIZE)
    label2id = label2id or {"contradiction": 0, "neutral": 1, "entailment": 2}
    config = bert_config(len(vocab), shape, label2id=label2id, id2label={v: k for k, v in label2id.items()})
    model = _random_classifier(config, seed)
    model.save_pretrained(directory)
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}), encoding="utf-8")
    return directory


def write_gliclass(directory: Path, seed: int = 2, shape: str = "tiny") -> Path:
    """A random GLiClass uni-encoder (BERT backbone, dot scorer, gliclass's defaults) in the layout
    GLiClassModel.save_pretrained writes, for benchmarks; the package's own checkpoints are tested against
    its pipeline in tests/integration/test_gliclass.py."""
    from safetensors.torch import save_file
    from tokenizers import AddedToken
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import BertModel

    from export.gliclass import DEFAULTS, GLICLASS_MODEL_TYPE, GliclassLogits, checkpoint_state
    from zsc_server.label_prompt import MARKERS

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(directory / "vocab.txt", None if shape == "tiny" else STRUCTBERT_VOCAB_SIZE)
    tokenizer = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=True)
    tokenizer.add_special_tokens([AddedToken(marker, special=True) for marker in MARKERS])
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer", "model_max_length": 512}),
        encoding="utf-8")
    encoder = bert_config(len(vocab) + len(MARKERS), shape)
    encoder.pop("num_labels")
    marker_ids = {name: tokenizer.token_to_id(marker) for name, marker in
                  zip(("class_token_index", "text_token_index", "example_token_index"), MARKERS)}
    config = {**DEFAULTS, "model_type": GLICLASS_MODEL_TYPE, "architectures": ["GLiClassModel"],
              "encoder_config": {**encoder, "model_type": "bert"}, "encoder_model_name": "random-bert",
              "hidden_size": encoder["hidden_size"], "vocab_size": encoder["vocab_size"], **marker_ids}
    torch.manual_seed(seed)
    backbone = BertModel(BertConfig(**encoder))
    module = GliclassLogits(backbone, config, int(config["max_num_classes"]), inner=encoder["hidden_size"])
    save_file({key: value.contiguous() for key, value in checkpoint_state(module).items()},
              str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.random_checkpoint",
        description="Write a random-weight NLI checkpoint (ModelScope StructBERT layout, or Hugging Face "
                    "layout with the same label order) for benchmarks and load tests without a download.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="base")
    parser.add_argument("--layout", choices=["modelscope", "huggingface", "gliclass"], default="modelscope")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.layout == "modelscope":
        write_modelscope_structbert(args.directory, args.seed, args.shape)
    elif args.layout == "gliclass":
        write_gliclass(args.directory, args.seed, args.shape)
    else:
        # StructBERT's label order, so both layouts of one seed score identically
        write_huggingface_nli(args.directory, args.seed, args.shape,
                              {"entailment": 0, "neutral": 1, "contradiction": 2})
    print(f"wrote a random {args.shape} checkpoint ({args.layout} layout) to {args.directory}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
