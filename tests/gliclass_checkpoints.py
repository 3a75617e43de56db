"""Tiny random GLiClass checkpoints, and Knowledgator's gliclass pipelines run on them: the test reference for
GLiClass models.

Both run in .venv-gliclass (`make setup-gliclass`; gliclass needs numpy 2), through tests/gliclass_pipeline.py,
which says what each job writes and answers. `make test` points ZSC_GLICLASS_PYTHON to it; without it the
calling test skips (tests/reference_venv.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.reference_venv import require_venv_python, run_json

RUNNER = Path(__file__).with_name("gliclass_pipeline.py")
MISSING = "GLiClass reference venv not found: run `make setup-gliclass` or use `make test`"


def _run(request: dict):
    python = require_venv_python("ZSC_GLICLASS_PYTHON", MISSING)
    return run_json(python, RUNNER, request, repository_on_path=True)


def write_gliclass(directory: Path, backbone: str = "deberta-v3", seed: int = 0, **config) -> Path:
    """A GLiClass checkpoint built with gliclass's own classes in `directory`: config.json, model.safetensors,
    and the backbone's tokenizer with <<LABEL>>, <<SEP>>, <<EXAMPLE>> added as gliclass's train.py adds them.

    backbone: "bert" (WordPiece) or "deberta-v3" (SentencePiece unigram), tiny (tests/hf_checkpoints.py);
    config: GLiClassModelConfig fields, e.g. scorer_type ("simple", "weighted-dot", "mlp"), pooling_strategy,
    class_token_pooling, embed_class_token, prompt_first, normalize_features, max_num_classes,
    architecture_type (beyond uni-encoder and bi-encoder: config.json and the tokenizer only). The head's
    weights are drawn wider than gliclass's own init (seeded), so labels score apart.
    """
    _run({"job": "write", "directory": str(directory), "backbone": backbone, "seed": seed, "config": config})
    return Path(directory)


def gliclass_reference(model_dir: Path, cases: list[dict], max_length: int = 1024) -> list[dict]:
    """gliclass's pipeline on each case, on the CPU in FP32, one text per batch.

    case: {"text", "labels", "classification_type": "single-label" (softmax) | "multi-label" (sigmoid, the
    default), "labels_chunk_size": N (optional: ZeroShotClassificationWithChunkingPipeline), other pipeline
    arguments (e.g. "prompt")}; labels unique. Answers per case: "scores" (every label's, in the case's label
    order), "input_ids" (the first model call's sequence) and "forwards" (each model call's input_ids and
    logits). max_length: where the pipeline truncates (its default 1024; at most 512 with the bert backbone,
    whose position table has 512 rows).
    """
    return _run({"job": "classify", "model": str(model_dir), "cases": [dict(case) for case in cases],
                 "max_length": max_length})
