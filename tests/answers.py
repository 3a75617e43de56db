"""How the tests judge a served answer: against a reference pipeline's, or against the exported encoder run
directly, outside Triton, one request at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from zsc_server.postprocess import score_labels
from zsc_server.preprocess import Preprocessor
from zsc_server.settings import ScoringSettings

TOLERANCE = 1e-4  # FP32 scores, served vs the reference


def assert_matches(result, expected_labels, expected_scores):
    assert len(result.labels) == len(expected_labels)
    np.testing.assert_allclose(result.scores, expected_scores, atol=TOLERANCE, rtol=0)
    # Orders agree except where two scores tie within the tolerance.
    for got, want, score in zip(result.labels, expected_labels, expected_scores):
        if got != want:
            assert abs(dict(zip(expected_labels, expected_scores))[got] - score) <= TOLERANCE


class DirectRun:
    """An exported repository's encoder outside Triton: the server's own preprocessing, one run of one
    request through `encoder` (an OnnxEncoder or OvEncoder on the repository's file), the server's scoring."""

    def __init__(self, repository: Path, encoder):
        config = text_format.Parse((repository / "preprocess" / "config.pbtxt").read_text(),
                                   model_config_pb2.ModelConfig())
        self.settings = ScoringSettings.from_model_config(
            json_format.MessageToDict(config, preserving_proto_field_name=True))
        self.preprocessor = Preprocessor(self.settings, repository / "preprocess" / "1" / "tokenizer.json")
        self.encoder = encoder
        self.export_info = json.loads((repository / "encoder" / "export.json").read_text())

    def classify(self, text: str, labels: list[str], template: str | None = None, multi_label: bool = False):
        prepared = self.preprocessor.prepare(text.encode(), [label.encode() for label in labels],
                                             template.encode() if template else None, multi_label)
        [output] = self.encoder.run_batch([prepared.encoded.as_dict(self.settings.encoder_inputs)])[0].values()
        return score_labels(self.settings, output, prepared.labels, prepared.multi_label)
