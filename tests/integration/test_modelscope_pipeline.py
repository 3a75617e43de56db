"""Served scores equal ModelScope's own zero-shot pipeline on the same random StructBERT checkpoint.

The pipeline runs in .venv-modelscope (`make setup-modelscope`; ModelScope needs transformers < 5),
pointed to by ZSC_MODELSCOPE_PYTHON, which `make test` sets. The cases stay under the served
max_length (64): ModelScope always truncates at 512 tokens (its `sequence_length` argument does not
reach the tokenizer in modelscope 1.40) and, despite passing truncation_strategy='only_first', its
tokenizer call ends up with truncation=True, i.e. longest_first; truncation itself is checked
against the PyTorch reference in test_parity.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.answers import TOLERANCE, assert_matches
from tests.reference_venv import require_venv_python, run_json

CASES = [
    dict(text="这个产品质量太差了，我要投诉！", candidate_labels="咨询,投诉，建议"),
    dict(text="这个产品质量太差了，我要投诉！", candidate_labels=["咨询", "投诉", "建议"], multi_label=True),
    dict(text="我的快递三天了还没到，请帮我查一下物流。", candidate_labels=["物流", "退款", "表扬", "维修"],
         hypothesis_template="这是一条关于{}的文本"),
    dict(text="希望增加夜间模式功能", candidate_labels=["建议"]),
    dict(text="客服电话打不通", candidate_labels=[f"类型{i}" for i in range(40)]),
]


@pytest.fixture(scope="module")
def modelscope_results(structbert):
    python = require_venv_python("ZSC_MODELSCOPE_PYTHON",
                                 "ModelScope pipeline venv not found: run `make setup-modelscope` or use `make test`")
    runner = Path(__file__).resolve().parents[1] / "modelscope_pipeline.py"
    request = {"model": str(structbert.checkpoint), "cases": [dict(case) for case in CASES]}
    return run_json(python, runner, request)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_matches_modelscope_pipeline(structbert, modelscope_results, protocol, index):
    with structbert.client(protocol) as client:
        result = client.classify(**CASES[index])
    expected = modelscope_results[index]
    assert_matches(result, expected["labels"], expected["scores"])
    assert max(abs(a - b) for a, b in zip(sorted(result.scores), sorted(expected["scores"]))) <= TOLERANCE
