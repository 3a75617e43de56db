"""Write the fast tokenizer (tokenizer.json) the preprocess model loads with ``tokenizers``."""

from __future__ import annotations

import shutil
from pathlib import Path

from tokenizers.implementations import BertWordPieceTokenizer

from export.errors import CheckpointError


def write_tokenizer_json(checkpoint_dir: Path, lowercase: bool, destination: Path) -> str:
    """Copy the checkpoint's tokenizer.json, or build a BERT WordPiece one from vocab.txt.

    Returns a short description of what was done. The built tokenizer matches
    ``BertTokenizer(vocab.txt, do_lower_case=lowercase)``: basic cleanup, CJK
    characters split, accents stripped when lowercasing, '##' word pieces.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    existing = checkpoint_dir / "tokenizer.json"
    if existing.is_file():
        shutil.copyfile(existing, destination)
        return f"copied {existing.name}"
    vocab = checkpoint_dir / "vocab.txt"
    if not vocab.is_file():
        raise CheckpointError(f"{checkpoint_dir}: neither tokenizer.json nor vocab.txt")
    tokenizer = BertWordPieceTokenizer(
        str(vocab), lowercase=lowercase, clean_text=True, handle_chinese_chars=True, strip_accents=None
    )
    tokenizer.save(str(destination))
    return f"built WordPiece from vocab.txt ({tokenizer.get_vocab_size()} tokens, lowercase={lowercase})"
