"""Run transformers' own zero-shot-classification pipeline on checkpoints and cases; results as JSON.

Imported by the tests (transformers 5 in .venv) and run as a script by them in .venv-modelscope
(transformers 4.57, the reference for DeBERTa: see docs/models-and-export.md):
    stdin:  {"models": {NAME: {"model": DIR, "cases": [{"text": ..., "candidate_labels": ..., ...}, ...]}}}
    stdout: {NAME: [{"labels": [...], "scores": [...]}, ...]}
"""

from __future__ import annotations

import json
import sys


def run_pipeline(model: str, cases: list[dict]) -> list[dict]:
    from transformers import pipeline
    from transformers.utils import logging

    logging.set_verbosity_error()
    classify = pipeline("zero-shot-classification", model=model, device="cpu")
    results = []
    for case in cases:
        arguments = dict(case)
        output = classify(arguments.pop("text"), **arguments)
        results.append({"labels": list(output["labels"]), "scores": [float(s) for s in output["scores"]]})
    return results


def main() -> None:
    request = json.load(sys.stdin)
    results = {name: run_pipeline(job["model"], job["cases"]) for name, job in request["models"].items()}
    json.dump(results, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
