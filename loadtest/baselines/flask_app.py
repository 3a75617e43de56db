"""The reference deployment's serving stack, measured as a baseline: one zero-shot pipeline behind a small Flask
endpoint, one request at a time (Flask's development server with threading off, as the reference deployment's WebUI
runs it).

  POST /classify  {"text": "...", "labels": ["...", ...], "multi_label": false}
               -> {"labels": [...], "scores": [...], "latency_ms": ...}
  GET  /health

Runs in .venv-modelscope (ModelScope needs transformers < 5):
  .venv-modelscope/bin/python loadtest/baselines/flask_app.py --pipeline modelscope --model DIR --port 8600
  .venv-modelscope/bin/python loadtest/baselines/flask_app.py --pipeline huggingface --model HF_DIR --port 8601
"""

from __future__ import annotations

import argparse
import logging
import time

from flask import Flask, jsonify, request


def modelscope_classifier(model: str):
    from modelscope.pipelines import pipeline
    from modelscope.utils.logger import get_logger

    get_logger().setLevel(logging.ERROR)
    classify = pipeline("zero-shot-classification", model=model, device="cpu")
    return lambda text, labels, multi_label: classify(text, candidate_labels=labels, multi_label=multi_label)


def huggingface_classifier(model: str):
    from transformers import pipeline

    classify = pipeline("zero-shot-classification", model=model, device=-1)
    # ModelScope's default template, so both baselines build the same (text, hypothesis) pairs
    return lambda text, labels, multi_label: classify(text, candidate_labels=labels, multi_label=multi_label,
                                                     hypothesis_template="{}")


CLASSIFIERS = {"modelscope": modelscope_classifier, "huggingface": huggingface_classifier}


def create_app(classify) -> Flask:
    app = Flask(__name__)

    @app.get("/health")
    def health():
        return jsonify(status="ok")

    @app.post("/classify")
    def classify_endpoint():
        body = request.get_json(force=True, silent=True) or {}
        if not body.get("text") or not body.get("labels"):
            return jsonify(error="'text' and 'labels' are required"), 400
        started = time.perf_counter()
        output = classify(body["text"], body["labels"], bool(body.get("multi_label", False)))
        return jsonify(labels=list(output["labels"]), scores=[float(s) for s in output["scores"]],
                       latency_ms=(time.perf_counter() - started) * 1e3)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", choices=sorted(CLASSIFIERS), required=True)
    parser.add_argument("--model", required=True, help="checkpoint directory (or hub id where there is network)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8600)
    args = parser.parse_args()
    app = create_app(CLASSIFIERS[args.pipeline](args.model))
    print(f"{args.pipeline} pipeline on http://{args.host}:{args.port}/classify", flush=True)
    app.run(args.host, args.port, threaded=False)


if __name__ == "__main__":
    main()
