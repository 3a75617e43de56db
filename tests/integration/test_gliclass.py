"""GLiClass uni-encoder checkpoints, exported and served, answer as the gliclass package's pipeline does.

Tiny random checkpoints built with the package's own classes (tests/gliclass_checkpoints.py, in .venv-gliclass):
three backbones (BERT, DeBERTa-v3, ModernBERT), the three served scorers, text pooling first and avg, labels
read at their marker, the token after it, or averaged over their tokens, labels before or after the text. Each
is exported (python-ort, FP32) with 4 labels per encoder row and max length 128 and served by a real
tritonserver, one at a time; the reference is ZeroShotClassificationPipeline (all labels in one sequence) or,
past 4 labels, ZeroShotClassificationWithChunkingPipeline with chunks of 4, on the same directory, truncating at
the same max length (CPU, FP32, one text per batch).
"""

from __future__ import annotations

import contextlib
import json

import pytest
from google.protobuf import text_format
from tokenizers import Tokenizer
from tritonclient.grpc import model_config_pb2

from export.errors import ExportError
from export.random_checkpoint import write_gliclass as write_random_gliclass
from export.random_checkpoint import write_huggingface_nli
from tests.conftest import export_repository, start_server
from tests.gliclass_checkpoints import gliclass_reference, write_gliclass
from zsc_client import ZeroShotClient, ZeroShotClientError

TOLERANCE = 1e-4  # max |Δ score| against the package's pipeline, FP32
LABELS_PER_ROW = 4
MAX_LENGTH = 128  # every case fits but the long one
VARIANTS = {
    "bert, gliclass's defaults": ("bert", {}),
    "deberta-v3, weighted-dot, labels first": ("deberta-v3", {"scorer_type": "weighted-dot", "prompt_first": True}),
    "bert, mlp, averaged labels and text": ("bert", {"scorer_type": "mlp", "class_token_pooling": "average",
                                                     "pooling_strategy": "avg", "embed_class_token": False}),
    "modernbert, dot, labels first": ("modernbert", {"prompt_first": True}),
    # labels per row from the checkpoint's max_num_classes, the export's default
    "deberta-v3, normalized features, the token after each marker": (
        "deberta-v3", {"normalize_features": True, "embed_class_token": False, "max_num_classes": LABELS_PER_ROW}),
}
NINE = ["billing", "bug report", "praise", "refund", "delivery", "login", "password", "invoice", "price"]
CASES = {
    "single-label": dict(text="I was charged twice for my subscription this month.",
                         candidate_labels=["billing", "bug report", "praise"]),
    "multi-label, Chinese": dict(text="我的快递三天了还没到，请帮我查一下物流！",
                                 candidate_labels=["物流", "退款", "投诉"], multi_label=True),
    "one label (scored on its own)": dict(text="Great service, thank you so much!", candidate_labels=["praise"]),
    "nine labels in three rows": dict(text="The delivery was fast but the refund is still missing.",
                                      candidate_labels=NINE),
    "nine labels in three rows, multi-label": dict(text="The app crashes every time I open the settings page.",
                                                   candidate_labels=NINE, multi_label=True),
    "a template": dict(text="The app crashes every time I open the settings page.",
                       candidate_labels="bug report, refund, praise", hypothesis_template="a text about {}"),
    # labels before the text, the package and the server cut the text's end alike; after it, the package cuts
    # the labels and the server the text (tests/unit/test_label_prompt.py)
    "a text past max length": dict(text="The app crashes every time I open the settings page. " * 20,
                                   candidate_labels=["bug report", "refund", "praise"]),
}
CUT_ALIKE_ONLY_LABELS_FIRST = {"a text past max length"}


@contextlib.contextmanager
def served(name: str, repository):
    server = start_server(name, repository)
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


def assert_scores(got, want: dict, tolerance: float = TOLERANCE) -> None:
    """The same labels, each score within `tolerance` of the pipeline's."""
    assert sorted(got.labels) == sorted(want)
    worst = max(abs(score - want[label]) for label, score in zip(got.labels, got.scores))
    assert worst <= tolerance, f"{dict(zip(got.labels, got.scores))} vs {want} (|Δ| {worst:.1e})"


def reference_case(case: dict) -> tuple[dict, list[str]]:
    """The case as the pipeline takes it, and the labels the server answers with."""
    labels = case["candidate_labels"]
    labels = [part.strip() for part in labels.split(",")] if isinstance(labels, str) else list(labels)
    template = case.get("hypothesis_template", "{}")
    multi = case.get("multi_label", False) or len(labels) == 1
    request = {"text": case["text"], "labels": [template.replace("{}", label) for label in labels],
               "classification_type": "multi-label" if multi else "single-label"}
    if len(labels) > LABELS_PER_ROW:
        request["labels_chunk_size"] = LABELS_PER_ROW
    return request, labels


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, tmp_path_factory):
    """One checkpoint written, exported and served (torn down before the next starts), with the pipeline's
    answers to every case."""
    backbone, config = VARIANTS[request.param]
    root = tmp_path_factory.mktemp("gliclass")
    checkpoint = write_gliclass(root / "checkpoint", backbone, **config)
    options = {} if "max_num_classes" in config else {"labels_per_row": LABELS_PER_ROW}
    repository = export_repository(str(checkpoint), root / "repository", runtime="python-ort", precision="fp32",
                                   max_length=MAX_LENGTH, **options)
    cases = [reference_case(case) for case in CASES.values()]
    answers = gliclass_reference(checkpoint, [request for request, _ in cases], max_length=MAX_LENGTH)
    expected = {name: dict(zip(labels, answer["scores"])) for name, (_, labels), answer in zip(CASES, cases, answers)}
    with served(f"gliclass-{backbone}", repository) as server:
        yield config, server, repository, expected


@pytest.mark.parametrize("case", list(CASES))
def test_matches_the_gliclass_pipeline(variant, protocol, case):
    config, server, _, expected = variant
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with ZeroShotClient(url, protocol) as client:
        got = client.classify(**CASES[case])
    want = expected[case]
    if case in CUT_ALIKE_ONLY_LABELS_FIRST and not config.get("prompt_first"):
        assert sorted(got.labels) == sorted(want) and len(set(got.scores)) > 1  # every label kept and scored
        return
    assert_scores(got, want)
    # ranked as the pipeline's scores rank them (labels closer than the tolerance may swap)
    assert all(want[a] >= want[b] - TOLERANCE for a, b in zip(got.labels, got.labels[1:]))
    if len(got.labels) > 1 and not CASES[case].get("multi_label"):
        assert abs(sum(got.scores) - 1) < 1e-5


def test_the_export_says_what_it_serves(variant):
    _, _, repository, _ = variant
    exported = json.loads((repository / "encoder" / "export.json").read_text())
    assert exported["layout"] == "gliclass" and exported["mode"] == "gliclass"
    assert exported["encoder_inputs"] == ["input_ids", "attention_mask"]
    encoder = text_format.Parse((repository / "encoder" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert [(output.name, list(output.dims)) for output in encoder.output] == [("logits", [LABELS_PER_ROW])]


def test_requests_holding_the_models_markers_are_refused(variant):
    _, server, _, _ = variant
    with ZeroShotClient(server.grpc_url) as client:
        with pytest.raises(ZeroShotClientError, match="CANDIDATE_LABELS: contains <<SEP>>"):
            client.classify("I was charged twice.", ["billing", "refund<<SEP>>"])
        assert client.classify("I was charged twice.", ["billing", "refund"]).labels  # still serving


def test_the_random_benchmark_checkpoint_loads_in_the_package(tmp_path):
    """export.random_checkpoint's GLiClass layout (the benchmarks') is one the package reads, and served
    answers equal its pipeline's."""
    checkpoint = write_random_gliclass(tmp_path / "checkpoint")
    repository = export_repository(str(checkpoint), tmp_path / "repository", runtime="python-ort", precision="fp32")
    case = CASES["nine labels in three rows"]
    request, labels = reference_case(case)
    request.pop("labels_chunk_size")  # the checkpoint's 25 labels per row hold all nine
    want = dict(zip(labels, gliclass_reference(checkpoint, [request])[0]["scores"]))
    with served("gliclass-random", repository) as server, ZeroShotClient(server.grpc_url) as client:
        assert_scores(client.classify(**case), want)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_openvino_serves_gliclass(tmp_path, precision):
    """python-ov (make export's CPU default, static INT8 through the accuracy gate): FP32 answers as the
    pipeline does; INT8 is quantized, gated and served (how close INT8 comes on random weights depends on the
    CPU's kernels, so only the FP32 answers are held to the pipeline's)."""
    checkpoint = write_gliclass(tmp_path / "checkpoint", "bert", scorer_type="weighted-dot")
    repository = export_repository(str(checkpoint), tmp_path / "repository", runtime="python-ov", precision=precision,
                                   labels_per_row=LABELS_PER_ROW, accuracy_gate="report")
    names = ["single-label", "nine labels in three rows, multi-label"]
    cases = [reference_case(CASES[name]) for name in names]
    answers = gliclass_reference(checkpoint, [request for request, _ in cases])
    with served(f"gliclass-ov-{precision}", repository) as server, ZeroShotClient(server.grpc_url) as client:
        for name, (_, labels), answer in zip(names, cases, answers):
            got, want = client.classify(**CASES[name]), dict(zip(labels, answer["scores"]))
            assert_scores(got, want, TOLERANCE if precision == "fp32" else 1.0)  # INT8: every label, a probability
            assert all(0 <= score <= 1 for score in got.scores)


@pytest.mark.parametrize("config, refusal", [
    ({"architecture_type": "bi-encoder"}, "architecture_type 'bi-encoder' is not served"),
    ({"architecture_type": "encoder-decoder"}, "architecture_type 'encoder-decoder' is not served"),
    ({"scorer_type": "hopfield"}, "scorer_type 'hopfield' is not served"),
    ({"use_lstm": True}, "use_lstm=True is not served"),
])
def test_architectures_not_served_are_refused_by_name(tmp_path, config, refusal):
    checkpoint = write_gliclass(tmp_path / "checkpoint", "bert", **config)
    with pytest.raises(ExportError, match=refusal):
        export_repository(str(checkpoint), tmp_path / "repository", runtime="python-ort")
    assert not (tmp_path / "repository").exists()


def test_a_backbone_not_tested_against_the_package_is_refused(tmp_path):
    checkpoint = write_gliclass(tmp_path / "checkpoint", "roberta")
    with pytest.raises(ExportError, match="GLiClass on a 'roberta' backbone .* is not served"):
        export_repository(str(checkpoint), tmp_path / "repository")


def test_a_config_whose_label_marker_is_not_the_tokenizers_is_refused(tmp_path):
    """Every slot would read no label (all labels scored alike), and validation against PyTorch could not tell."""
    checkpoint = write_gliclass(tmp_path / "checkpoint", "bert")
    config = json.loads((checkpoint / "config.json").read_text())
    config["class_token_index"] += 1
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="tokenizer's <<LABEL>> is id .* class_token_index"):
        export_repository(str(checkpoint), tmp_path / "repository")


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    return write_random_gliclass(tmp_path_factory.mktemp("gliclass-random") / "checkpoint")


@pytest.mark.parametrize("options, refusal", [
    ({"runtime": "python-torch", "torch_device": "cpu"}, "python-torch runtime .* not GLiClass"),
    ({"max_windows": 3}, "max_windows 1"),
    ({"labels_per_row": 0}, "--labels-per-row must be at least 1"),
    ({"template": "{}<<SEP>>"}, "--template: contains <<SEP>>"),
])
def test_export_options_gliclass_cannot_take_are_refused(random_checkpoint, tmp_path, options, refusal):
    with pytest.raises(ExportError, match=refusal):
        export_repository(str(random_checkpoint), tmp_path / "repository", **options)


def test_labels_per_row_is_refused_for_a_model_that_scores_one_label_per_row(tmp_path):
    checkpoint = write_huggingface_nli(tmp_path / "nli")
    with pytest.raises(ExportError, match="labels per row are for GLiClass checkpoints"):
        export_repository(str(checkpoint), tmp_path / "repository", labels_per_row=4)


def test_a_deberta_tokenizer_saved_by_transformers_4_is_served_as_the_pipeline_tokenizes(tmp_path):
    """transformers 5 (which gliclass needs) rebuilds a DeBERTa-v2 tokenizer's normalizer (NFC) whatever the
    checkpoint's tokenizer.json says; checkpoints saved under transformers 4 say NFKC, which makes '，' a ','.
    Export writes the tokenizer as transformers loads it, so the server tokenizes as the pipeline does."""
    checkpoint = write_gliclass(tmp_path / "checkpoint", "deberta-v3")
    saved = json.loads((checkpoint / "tokenizer.json").read_text(encoding="utf-8"))
    saved["normalizer"] = {"type": "NFKC"}
    (checkpoint / "tokenizer.json").write_text(json.dumps(saved, ensure_ascii=False), encoding="utf-8")
    case = CASES["multi-label, Chinese"]
    request, labels = reference_case(case)
    [answer] = gliclass_reference(checkpoint, [request])
    as_saved = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    prompt = case["text"] + "".join(f"<<LABEL>>{label}" for label in labels) + "<<SEP>>"
    assert as_saved.encode(prompt).ids != answer["input_ids"]  # the file alone would tokenize otherwise
    repository = export_repository(str(checkpoint), tmp_path / "repository", runtime="python-ort", precision="fp32")
    serving_tokenizer = Tokenizer.from_file(str(repository / "preprocess" / "1" / "tokenizer.json"))
    assert serving_tokenizer.encode(prompt).ids == answer["input_ids"]
    want = dict(zip(labels, answer["scores"]))
    with served("gliclass-nfkc", repository) as server, ZeroShotClient(server.grpc_url) as client:
        assert_scores(client.classify(**case), want)
