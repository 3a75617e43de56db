"""Write the fast tokenizer (tokenizer.json) the preprocess model loads with ``tokenizers``.

Three sources, in order: the checkpoint's own tokenizer.json; a BERT vocab.txt (WordPiece built here);
the slow tokenizer files (spm.model, sentencepiece.bpe.model, vocab.json + merges.txt), converted with
transformers and checked against the slow tokenizer on sample pairs. Export also writes the tokenizer's
pad token into tokenizer.json's padding, where the server reads it (RoBERTa and BART pad with <pad> = 1).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from export.errors import CheckpointError
from zsc_server.settings import ENCODER_INPUTS

# transformers' placeholder for "no limit" is 1e30; anything this large means the tokenizer does not truncate
UNSET_MAX_LENGTH = 10**9
SENTENCEPIECE_FILES = ("spm.model", "sentencepiece.bpe.model", "tokenizer.model")
# Sample pairs the converted tokenizer must encode as the slow one does: full-width punctuation and
# compatibility characters (NFKC), accents, runs of spaces, CJK, newlines.
CHECK_TEXTS = [
    "我的快递三天了还没到，请帮我查一下物流。",
    "这个产品质量太差了，我要投诉！ＡＢＣ１２３",
    "The app crashes every time I open the settings page.",
    "  Ça marche très bien…  naïve   café\n\tnew line ",
]
CHECK_HYPOTHESES = ["This example is 投诉.", "a complaint", "关于物流的问题"]
# Pairs whose special-token layout is compared with transformers' tokenizer: plain ASCII, where every
# normalizer agrees.
LAYOUT_PAIRS = [("the app crashes", "this example is a bug."), ("hello world", "praise")]


@dataclasses.dataclass(frozen=True)
class TokenizerFacts:
    """What export needs to know of the checkpoint's tokenizer, read with transformers."""

    model_input_names: tuple[str, ...] = ENCODER_INPUTS
    pad_token: str = "[PAD]"
    model_max_length: int | None = None  # None: the tokenizer does not truncate
    lowercase: bool = True  # for the WordPiece built from vocab.txt
    loaded: object = None  # the transformers tokenizer (None for ModelScope vocab.txt checkpoints)


def _tokenizer_config(directory: Path) -> dict:
    path = directory / "tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def bert_vocab_facts(directory: Path) -> TokenizerFacts:
    """A ModelScope checkpoint: BertTokenizer over vocab.txt, lowercasing unless told otherwise."""
    config = _tokenizer_config(directory)
    return TokenizerFacts(lowercase=bool(config.get("do_lower_case", True)),
                          model_max_length=_limit(config.get("model_max_length")))


def _limit(value) -> int | None:
    return int(value) if value is not None and int(value) < UNSET_MAX_LENGTH else None


def tokenizer_facts(directory: Path) -> TokenizerFacts:
    """Load the checkpoint's tokenizer with transformers (as the pipeline does) and read its facts."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for unreadable tokenizers
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{directory}: transformers cannot load the tokenizer ({reason})") from None
    # The pipeline pads with eos where a tokenizer has no pad token.
    pad = tokenizer.pad_token if tokenizer.pad_token is not None else tokenizer.eos_token
    if pad is None or tokenizer.convert_tokens_to_ids(pad) is None:
        raise CheckpointError(f"{directory}: the tokenizer has neither a pad nor an eos token")
    return TokenizerFacts(
        model_input_names=tuple(tokenizer.model_input_names), pad_token=str(pad),
        model_max_length=_limit(tokenizer.model_max_length),
        lowercase=bool(_tokenizer_config(directory).get("do_lower_case", True)), loaded=tokenizer,
    )


def write_tokenizer_json(checkpoint_dir: Path, facts: TokenizerFacts, destination: Path,
                         as_loaded: bool = False) -> str:
    """Write tokenizer.json for the server; returns a short description of where it came from.

    as_loaded: the tokenizer exactly as transformers (this venv's, 5.x) loads it, for models whose reference
    pipeline needs transformers 5 (GLiClass): it rebuilds some tokenizers' normalizers (DeBERTa-v2: NFC)
    whatever the checkpoint's tokenizer.json says."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    existing = checkpoint_dir / "tokenizer.json"
    vocab = checkpoint_dir / "vocab.txt"
    if as_loaded and facts.loaded is not None and getattr(facts.loaded, "backend_tokenizer", None) is not None:
        tokenizer = Tokenizer.from_str(facts.loaded.backend_tokenizer.to_str())
        how = "the tokenizer as transformers loads it"
    elif existing.is_file():
        tokenizer, how = Tokenizer.from_file(str(existing)), f"the checkpoint's {existing.name}"
    elif vocab.is_file():
        # matches BertTokenizer(vocab.txt, do_lower_case): cleanup, CJK split, accents stripped when
        # lowercasing, '##' word pieces (checked in tests/unit/test_tokenization.py)
        built = BertWordPieceTokenizer(str(vocab), lowercase=facts.lowercase, clean_text=True,
                                       handle_chinese_chars=True, strip_accents=None)
        tokenizer = built._tokenizer
        how = f"WordPiece from vocab.txt ({built.get_vocab_size()} tokens, lowercase={facts.lowercase})"
    elif facts.loaded is not None:
        tokenizer = convert_slow_tokenizer(checkpoint_dir, facts.loaded)
        how = "converted from the slow tokenizer with transformers, checked against it on sample pairs"
    else:
        raise CheckpointError(f"{checkpoint_dir}: no tokenizer.json, vocab.txt or slow tokenizer files")
    pad_id = tokenizer.token_to_id(facts.pad_token)
    if pad_id is None:
        raise CheckpointError(f"{checkpoint_dir}: the pad token {facts.pad_token!r} is not in the vocabulary")
    tokenizer.enable_padding(pad_id=pad_id, pad_token=facts.pad_token)
    tokenizer.save(str(destination))
    return f"{how}; pad {facts.pad_token!r} = {pad_id}"


def convert_slow_tokenizer(checkpoint_dir: Path, slow) -> Tokenizer:
    """transformers' slow -> fast conversion, as the hub's tokenizer.json files were made.

    SentencePiece models go through transformers' converter for the tokenizer class, which builds the
    normalizer from the model's own normalization rules (its precompiled charsmap: NFKC for DeBERTa-v3 and
    XLM-R), plus the tokenizer's added tokens; transformers 5 itself rebuilds some of these tokenizers
    with a normalizer of its own (NFC for DeBERTa-v2). Other slow files (vocab.json + merges.txt) take
    the backend transformers builds from them. Either way the result is checked before it is used."""
    from transformers.convert_slow_tokenizer import SLOW_TO_FAST_CONVERTERS, SpmConverter

    spm_files = [checkpoint_dir / name for name in SENTENCEPIECE_FILES if (checkpoint_dir / name).is_file()]
    converter = SLOW_TO_FAST_CONVERTERS.get(type(slow).__name__.removesuffix("Fast"))
    if spm_files and converter is not None and issubclass(converter, SpmConverter):
        tokenizer = converter(slow).converted()
        tokenizer.add_special_tokens([
            AddedToken(token.content, single_word=token.single_word, lstrip=token.lstrip, rstrip=token.rstrip,
                       normalized=token.normalized, special=True)
            for _, token in sorted(slow.added_tokens_decoder.items())
        ])
        check_against_sentencepiece(tokenizer, spm_files[0])
    elif spm_files:
        raise CheckpointError(f"{checkpoint_dir}: no tokenizer.json, and transformers has no SentencePiece "
                              f"converter for {type(slow).__name__}; save the tokenizer with a fast tokenizer")
    else:
        tokenizer = Tokenizer.from_str(slow.backend_tokenizer.to_str())
        check_contents(tokenizer, lambda text: slow(text, add_special_tokens=False)["input_ids"], "transformers")
    check_layout(tokenizer, slow)
    return tokenizer


def check_against_sentencepiece(tokenizer: Tokenizer, model_file: Path) -> None:
    """Every sample text and hypothesis splits into the pieces sentencepiece itself gives."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))

    def pieces(text: str) -> list[int | None]:
        # by piece, not id: XLM-R's ids are sentencepiece's shifted by one (fairseq's order)
        return [tokenizer.token_to_id(processor.id_to_piece(i)) for i in processor.encode(text)]

    check_contents(tokenizer, pieces, "sentencepiece")


def check_contents(tokenizer: Tokenizer, reference, name: str) -> None:
    for text in CHECK_TEXTS + CHECK_HYPOTHESES:
        got, want = tokenizer.encode(text, add_special_tokens=False).ids, list(reference(text))
        if got != want:
            raise CheckpointError(f"the converted tokenizer splits {text!r} into {got}, {name} into {want}: "
                                  "save the tokenizer with a fast tokenizer (tokenizer.json) and export again")


def check_layout(tokenizer: Tokenizer, slow) -> None:
    """A pair gets the special tokens (and token types) transformers' tokenizer gives it."""
    for text, hypothesis in LAYOUT_PAIRS:
        got = tokenizer.encode(text, hypothesis)
        want = slow(text, hypothesis)
        if got.ids != list(want["input_ids"]) or (
                "token_type_ids" in want and got.type_ids != list(want["token_type_ids"])):
            raise CheckpointError(f"the converted tokenizer encodes the pair ({text!r}, {hypothesis!r}) as "
                                  f"{got.ids}, transformers as {list(want['input_ids'])}")
