"""GPU detection for `make export` (--gpu auto) and the launcher's CPU-encoder warning. No GPU here: a
stand-in `nvidia-smi` script on PATH answers the query as the driver would."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from export.cli import main as export_main
from export.gpu_profiles import CARDS, card_for
from export.random_checkpoint import write_modelscope_structbert
from loadtest.server import query_gpus
from tests.fakes import fake_nvidia_smi
from zsc_server.gpus import VisibleGpu, visible_gpus
from zsc_server.serve import cpu_encoder_warning


@pytest.fixture
def gpu_host(tmp_path, monkeypatch):
    """PATH with a stand-in nvidia-smi listing one H100."""
    folder = fake_nvidia_smi(tmp_path / "bin", "NVIDIA H100 80GB HBM3, 81559")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(("name", "memory_mib", "card"), [
    ("Tesla T4", 15360, "t4"),
    ("Tesla V100-SXM2-16GB", 16384, "v100"),
    ("NVIDIA A10G", 23028, "a10g"),
    ("NVIDIA L4", 23034, "l4"),
    ("NVIDIA A100-SXM4-40GB", 40960, "a100"),
    ("NVIDIA H100 80GB HBM3", 81559, "h100"),
    ("NVIDIA H100 PCIe", 81559, "h100"),
    ("NVIDIA H200", 143771, "h200"),
])
def test_listed_cards_get_their_own_profile(name, memory_mib, card):
    key, why = card_for(name, memory_mib)
    assert key == card and name in why


def test_an_unlisted_card_gets_the_largest_profile_that_fits_its_memory():
    key, why = card_for("NVIDIA L40S", 46068)  # 48 GB: not an L4, whatever its name starts with
    assert key == "a100" and "no profile of its own" in why
    assert CARDS[key].memory_gib * 1024 <= 46068 * 1.05
    assert card_for("Some Tiny GPU", 4096)[0] == "t4"  # nothing fits: the smallest profile


def test_visible_gpus_reads_nvidia_smi(tmp_path, monkeypatch):
    folder = fake_nvidia_smi(tmp_path / "ok", "NVIDIA H200, 143771\nNVIDIA H200, 143771")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    assert visible_gpus() == [VisibleGpu("NVIDIA H200", 143771)] * 2


def test_load_tests_read_memory_and_utilization_from_the_same_query(tmp_path, monkeypatch):
    """A name with a comma stays whole; a GPU whose utilization is "[N/A]" gives no figures."""
    folder = fake_nvidia_smi(tmp_path / "ok", "NVIDIA H100, PCIe, 1200, 81559, 37\nNVIDIA L4, 10, 23034, [N/A]")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    assert query_gpus() == [{"name": "NVIDIA H100, PCIe", "memory_used_mb": 1200.0, "memory_total_mb": 81559.0,
                             "utilization": 37.0}]


def test_no_driver_and_no_nvidia_smi_mean_no_gpu(tmp_path, monkeypatch):
    broken = fake_nvidia_smi(tmp_path / "broken", "NVIDIA-SMI has failed because it couldn't communicate "
                                                  "with the NVIDIA driver.", exit_code=9)
    monkeypatch.setenv("PATH", f"{broken}{os.pathsep}{os.environ['PATH']}")
    assert visible_gpus() == []
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert visible_gpus() == []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_modelscope_structbert(tmp_path_factory.mktemp("ckpt") / "checkpoint")


def export(checkpoint: Path, repository: Path, *extra: str) -> dict:
    assert export_main(["--model", str(checkpoint), "--repository", str(repository), "--max-length", "32",
                        *extra]) == 0
    return json.loads((repository / "encoder" / "export.json").read_text())


def test_plain_export_on_a_gpu_host_picks_the_cards_profile_and_says_why(gpu_host, checkpoint, tmp_path, capsys):
    info = export(checkpoint, tmp_path / "repository")
    out = capsys.readouterr().out
    assert "1 GPU(s): NVIDIA H100 80GB HBM3 visible: GPU profile h100" in out
    assert (info["runtime"], info["precision"], info["gpu_profile"]) == ("python-torch", "fp16", "h100")
    assert "kind: KIND_GPU" in (tmp_path / "repository" / "encoder" / "config.pbtxt").read_text()


def test_gpu_none_and_cpu_runtimes_export_for_the_cpu_on_a_gpu_host(gpu_host, checkpoint, tmp_path, capsys):
    info = export(checkpoint, tmp_path / "none", "--gpu", "none")
    assert (info["runtime"], info["gpu_profile"]) == ("python-ort", "")
    info = export(checkpoint, tmp_path / "ort", "--runtime", "python-ort")
    assert (info["runtime"], info["gpu_profile"]) == ("python-ort", "")
    assert "asked to run on the CPU (--runtime python-ort): no GPU profile" in capsys.readouterr().out
    info = export(checkpoint, tmp_path / "int8", "--precision", "int8", "--accuracy-gate", "report")
    assert (info["runtime"], info["precision"], info["gpu_profile"]) == ("python-ort", "int8", "")
    # what a CPU export beside a GPU makes the launcher say at start
    warning = cpu_encoder_warning(tmp_path / "none")
    assert warning and "NVIDIA H100 80GB HBM3" in warning and "python-ort" in warning


def test_without_a_gpu_a_plain_export_takes_the_fastest_cpu_setup_the_gate_allows(checkpoint, tmp_path,
                                                                                    monkeypatch, capsys):
    """--gpu auto on a host without a GPU, no runtime or precision asked: OpenVINO INT8 where the accuracy gate
    passes, else OpenVINO FP32. A tiny random checkpoint fails the gate (rounding is large next to its
    weights); the pass is then simulated by a gate that accepts anything. The launcher stays quiet."""
    from export import agreement

    monkeypatch.setenv("PATH", str(Path(os.__file__).parent))  # no nvidia-smi on it
    info = export(checkpoint, tmp_path / "repository", "--gate-requests", "16")
    assert (info["runtime"], info["precision"], info["gpu_profile"]) == ("python-ov", "fp32", "")
    out = capsys.readouterr().out
    assert "no GPU visible (nvidia-smi): exporting for the CPU" in out
    assert "python-ov int8, the fastest CPU setup measured" in out and "exporting python-ov fp32 instead" in out
    assert cpu_encoder_warning(tmp_path / "repository") is None

    monkeypatch.setattr(agreement, "enforce", lambda report: None)
    info = export(checkpoint, tmp_path / "passed", "--gate-requests", "16")
    assert (info["runtime"], info["precision"]) == ("python-ov", "int8")
    # asked for: no policy
    info = export(checkpoint, tmp_path / "asked", "--precision", "fp32")
    assert (info["runtime"], info["precision"]) == ("python-ort", "fp32")


def test_the_launcher_says_nothing_about_a_gpu_export(gpu_host, checkpoint, tmp_path):
    export(checkpoint, tmp_path / "repository", "--gpu", "h100")
    assert cpu_encoder_warning(tmp_path / "repository") is None
