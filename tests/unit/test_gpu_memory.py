"""The GPU memory probe (export/gpu_memory.py) on the CPU: what it measures per precision and layout, and how a
precision the card cannot run is left out, saying so."""

from __future__ import annotations

import json

from export import gpu_memory
from tests.tiny_bert import save_tiny_bert


def probe(tmp_path, precisions: str) -> dict:
    model = save_tiny_bert(tmp_path / "model.pt", layers=1)
    assert gpu_memory.main(["--model", str(model), "--out", str(tmp_path), "--device", "cpu", "--batches", "1,2",
                            "--sequences", "16", "--repeats", "2", "--precisions", precisions]) == 0
    return json.loads((tmp_path / "memory.json").read_text())


def test_each_precision_and_layout_is_measured_once_as_the_cpu_runs_it(tmp_path):
    result = probe(tmp_path, "fp16,fp32,fp8")  # the CPU runs fp16 as fp32: measured once
    assert [(row["precision"], row["layout"], row["batch"]) for row in result["shapes"]] == [
        (precision, layout, batch) for precision in ("fp32", "fp8-emulated") for layout in ("padded", "packed")
        for batch in (1, 2)]
    assert list(result["meta"]["weights_mib"]) == ["fp32", "fp8-emulated"] and not result["meta"]["not_measured"]
    assert "| fp8-emulated | packed | 2 | 16 |" in (tmp_path / "memory.md").read_text()


def test_a_precision_the_card_cannot_run_is_skipped_saying_why(tmp_path, monkeypatch):
    # stands in for a GPU without FP8 tensor cores, which this machine cannot have
    served = gpu_memory.load_for_serving

    def no_fp8(path, device, precision):
        if precision == "fp8":
            raise ValueError("--precision fp8 needs FP8 tensor cores; NVIDIA A100 is 8.0: export fp16")
        return served(path, device, precision)

    monkeypatch.setattr(gpu_memory, "load_for_serving", no_fp8)
    result = probe(tmp_path, "fp32,fp8")
    assert {row["precision"] for row in result["shapes"]} == {"fp32"}
    assert result["meta"]["not_measured"] == [
        "fp8-emulated: --precision fp8 needs FP8 tensor cores; NVIDIA A100 is 8.0: export fp16"]
    assert "Not measured: fp8-emulated: --precision fp8 needs" in (tmp_path / "memory.md").read_text()
