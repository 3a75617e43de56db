"""The names of the ensemble's tensors, declared once: the export writes them into the configs
(export/repository.py), the Python-backend models and the probe read and write them. (The client package,
installable alone, keeps its own copy in zsc_client/request.py, which the load tests use;
tests/unit/test_tensor_names.py holds the two together.)"""

from __future__ import annotations

# zero_shot's request inputs (TEXT and CANDIDATE_LABELS required, the others optional)
TEXT = "TEXT"
CANDIDATE_LABELS = "CANDIDATE_LABELS"
HYPOTHESIS_TEMPLATE = "HYPOTHESIS_TEMPLATE"
MULTI_LABEL = "MULTI_LABEL"
# its response outputs; the ensemble's inputs and outputs share one namespace, so the candidate labels cannot
# also be called LABELS (Triton then answers the input back as the output)
LABELS = "LABELS"
SCORES = "SCORES"
SERVER_LATENCY_MS = "SERVER_LATENCY_MS"

# from the preprocess to the postprocess, inside the ensemble
PREPARED_LABELS = "labels"
PREPARED_MULTI_LABEL = "multi_label"
START_NS = "start_ns"
LABEL_EMBEDDINGS = "label_embeddings"  # embedding mode with the label cache; else [0, 0]
# the encoder's output (its own name: logits, last_hidden_state, ...) as the postprocess receives it
ENCODER_OUTPUT = "encoder_output"

# the launcher's warm-up, sent to the preprocess model itself (zsc_server/warm_up.py)
WARM_UP = "warm_up"
WARM_UP_REPORT = "warm_up_report"
