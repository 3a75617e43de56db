"""Run ModelScope's own zero-shot pipeline on cases read from stdin; print results as JSON.

Runs in .venv-modelscope (transformers < 5), started by test_modelscope_pipeline.py:
    stdin:  {"model": DIR, "cases": [{"text": ..., "candidate_labels": ..., ...}, ...]}
    stdout: [{"labels": [...], "scores": [...]}, ...]
"""

import json
import logging
import sys

from modelscope.pipelines import pipeline
from modelscope.utils.logger import get_logger


def main() -> None:
    get_logger().setLevel(logging.ERROR)
    request = json.load(sys.stdin)
    classify = pipeline("zero-shot-classification", model=request["model"], device="cpu")
    results = []
    for case in request["cases"]:
        output = classify(case.pop("text"), **case)
        results.append({"labels": list(output["labels"]), "scores": [float(s) for s in output["scores"]]})
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
