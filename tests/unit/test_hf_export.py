"""Hugging Face families at export, without a server: the pipeline's label rules, the model's inputs and
limits, slow-tokenizer conversion and its check, the pad id, the runtimes that refuse a family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, normalizers

from export import cli
from export.checkpoint import contradiction_index, entailment_index, load_checkpoint
from export.errors import CheckpointError
from export.repository import ServingSettings, encoder_config, ensemble_config, preprocess_config, to_pbtxt
from export.tokenizer import check_against_sentencepiece, tokenizer_facts, write_tokenizer_json
from tests.hf_checkpoints import FAMILIES, write_family
from zsc_server.settings import ScoringSettings
from zsc_server.tokenization import PairTokenizer


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: write_family(FAMILIES[name], root / name) for name in ("roberta", "xlm-roberta", "deberta-v3",
                                                                         "bart", "modernbert")}


@pytest.mark.parametrize("label2id, want", [
    ({"contradiction": 0, "neutral": 1, "entailment": 2}, 2),
    ({"ENTAILMENT": 0, "NEUTRAL": 1, "CONTRADICTION": 2}, 0),
    ({"entailment": 0, "not_entailment": 1}, 0),
    ({"not_entailment": 0, "entailment": 1}, 1),  # 'not_entailment' does not start with 'entail'
    ({"contradiction": 0, "Entails": 1, "entailment": 2}, 1),  # the first match wins, as in the pipeline
])
def test_entailment_is_the_first_label_starting_with_entail(label2id, want):
    assert entailment_index(label2id, Path("ckpt")) == want


def test_a_model_without_an_entailment_label_is_refused_in_one_line():
    with pytest.raises(CheckpointError) as raised:
        entailment_index({"LABEL_0": 0, "LABEL_1": 1}, Path("ckpt"))
    assert "starting with 'entail'" in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("entailment, num_labels, want", [(0, 3, 2), (2, 3, 0), (1, 3, 0), (0, 2, 1), (1, 2, 0)])
def test_contradiction_is_derived_as_the_pipeline_does(entailment, num_labels, want):
    """`-1 if entailment_id == 0 else 0`: the last class, or the first."""
    assert contradiction_index(entailment, num_labels) == want


@pytest.mark.parametrize("name, indices, limit", [
    ("roberta", (1, 0), 512), ("xlm-roberta", (2, 0), 512), ("deberta-v3", (0, 2), 512), ("bart", (2, 0), 1024),
    ("modernbert", (0, 1), 512),
])
def test_families_load_with_their_inputs_indices_template_and_limit(checkpoints, name, indices, limit):
    ckpt = load_checkpoint(str(checkpoints[name]))
    assert ckpt.input_names == FAMILIES[name].inputs
    assert (ckpt.entailment_index, ckpt.contradiction_index) == indices
    assert ckpt.default_template == "This example is {}."
    assert ckpt.max_length_limit == limit  # RoBERTa: 514 positions less padding_idx + 1


def test_unsupported_model_type_is_one_line_naming_the_supported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(str(tmp_path))
    message = str(raised.value)
    assert "'gpt2' is not supported" in message and "deberta-v2" in message and "\n" not in message


def test_python_torch_refuses_other_families_before_any_work(checkpoints, tmp_path, capsys):
    repository = tmp_path / "repository"
    assert cli.main(["--model", str(checkpoints["roberta"]), "--repository", str(repository),
                     "--runtime", "python-torch", "--torch-device", "cpu"]) == 1
    error = capsys.readouterr().err.strip()
    assert "python-torch" in error and "python-ort, onnxruntime or tensorrt" in error and "'roberta'" in error
    assert len(error.splitlines()) == 1 and not repository.exists()


def test_max_length_model_and_its_limit(checkpoints, tmp_path, capsys):
    repository = tmp_path / "repository"
    assert cli.main(["--model", str(checkpoints["bart"]), "--repository", str(repository), "--gpu", "none",
                     "--max-length",
                     "model"]) == 0
    exported = json.loads((repository / "encoder" / "export.json").read_text())
    assert exported["max_length"] == 1024 and exported["encoder_inputs"] == ["input_ids", "attention_mask"]
    assert exported["default_template"] == "This example is {}."
    capsys.readouterr()
    assert cli.main(["--model", str(checkpoints["roberta"]), "--repository", str(repository), "--gpu", "none",
                     "--max-length",
                     "514"]) == 1
    assert "exceeds what the model takes (512 tokens" in capsys.readouterr().err


def test_slow_sentencepiece_tokenizer_is_converted_and_checked(checkpoints, tmp_path):
    """XLM-R ships only sentencepiece.bpe.model: converted with transformers, NFKC as sentencepiece."""
    destination = tmp_path / "tokenizer.json"
    how = write_tokenizer_json(checkpoints["xlm-roberta"], tokenizer_facts(checkpoints["xlm-roberta"]), destination)
    assert how.startswith("converted from the slow tokenizer") and "'<pad>' = 1" in how
    tokenizer = Tokenizer.from_file(str(destination))
    assert tokenizer.encode("投诉，咨询").tokens == tokenizer.encode("投诉,咨询").tokens  # ， -> , (NFKC)
    assert tokenizer.encode("a", "b").tokens[:2] == ["<s>", "▁a"]


def test_a_converted_tokenizer_that_normalizes_differently_is_refused(checkpoints):
    """The check compares with sentencepiece itself: NFC where the model says NFKC is caught (what
    transformers 5's own DebertaV2Tokenizer does)."""
    from transformers import AutoTokenizer

    directory = checkpoints["deberta-v3"]
    nfc = Tokenizer.from_str(AutoTokenizer.from_pretrained(directory).backend_tokenizer.to_str())
    with pytest.raises(CheckpointError, match="sentencepiece"):
        check_against_sentencepiece(nfc, directory / "spm.model")
    served = Tokenizer.from_file(str(directory / "tokenizer.json"))
    check_against_sentencepiece(served, directory / "spm.model")
    served.normalizer = normalizers.NFC()
    with pytest.raises(CheckpointError, match="save the tokenizer with a fast tokenizer"):
        check_against_sentencepiece(served, directory / "spm.model")


def test_pad_id_comes_from_the_tokenizer(checkpoints, tmp_path):
    destination = tmp_path / "tokenizer.json"
    write_tokenizer_json(checkpoints["bart"], tokenizer_facts(checkpoints["bart"]), destination)
    pairs = PairTokenizer(destination, max_length=64, buckets=(32, 64))
    assert pairs.pad_id == 1  # <pad>; 0 is <s> in RoBERTa / BART vocabularies
    batch = pairs.encode_pairs("the app crashes every time", ["bug", "a much longer hypothesis about billing"])
    assert batch.input_ids[0, batch.attention_mask[0].sum():].tolist() == [1] * (32 - batch.attention_mask[0].sum())


def test_bart_head_reads_each_rows_last_eos_as_transformers_does(checkpoints):
    ckpt = load_checkpoint(str(checkpoints["bart"]))
    tokenizer = ckpt.tokenizer.loaded
    pairs = [("the app crashes", "This example is bug."), ("a refund", "This example is </s> billing.")]
    with torch.inference_mode():
        for text, hypothesis in pairs:  # one pair at a time, as the pipeline runs them
            features = tokenizer(text, hypothesis, return_tensors="pt")
            want = ckpt.module.model(**features).logits
            got = ckpt.module(features["input_ids"], features["attention_mask"])
            torch.testing.assert_close(got, want)
        # together, padded: transformers refuses rows with different numbers of </s>; the export does not
        batch = tokenizer([p[0] for p in pairs], [p[1] for p in pairs], return_tensors="pt", padding=True)
        together = ckpt.module(batch["input_ids"], batch["attention_mask"])
        alone = ckpt.module.model(**tokenizer(*pairs[1], return_tensors="pt")).logits
        torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=0)


def test_settings_and_configs_carry_the_encoder_inputs():
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    scoring = ScoringSettings(encoder_inputs=("input_ids", "attention_mask"))
    params = {"parameters": {k: {"string_value": v} for k, v in scoring.to_parameters().items()}}
    assert ScoringSettings.from_model_config(params) == scoring
    with pytest.raises(ValueError, match="encoder_inputs"):
        ScoringSettings(encoder_inputs=("attention_mask", "position_ids"))

    def parse(config):
        return text_format.Parse(to_pbtxt(config), model_config_pb2.ModelConfig())

    preprocess = parse(preprocess_config(scoring, ServingSettings()))
    encoder = parse(encoder_config(scoring, ServingSettings(), "logits", 2))
    ensemble = parse(ensemble_config("logits", encoder_inputs=scoring.encoder_inputs))
    assert [i.name for i in encoder.input] == ["input_ids", "attention_mask"]
    assert "token_type_ids" not in {o.name for o in preprocess.output}
    steps = {step.model_name: step for step in ensemble.ensemble_scheduling.step}
    assert set(steps["encoder"].input_map) == {"input_ids", "attention_mask"}
