"""make perf's parts that need no server: perf_analyzer's input data, its profile export's BYTES tensors,
the answer check, level sizing, the tools folder, the Makefile lines."""

from __future__ import annotations

import os
import shlex
import stat
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from loadtest import perf
from loadtest.perf_data import check_answers, input_data, read_csv, split_bytes_tensor
from loadtest.perf_tools import ToolError, extract_member, library_env, locate
from loadtest.workload import ClassifyRequest

ROOT = Path(__file__).resolve().parents[2]


def serialized(items: list[str]) -> bytes:
    """Triton's BYTES tensor serialization: a 4-byte little-endian length before each element."""
    return b"".join(struct.pack("<I", len(item.encode())) + item.encode() for item in items)


def exported(items: list[str]) -> str:
    """As perf_analyzer 2.51 writes a BYTES tensor into its profile export: without the first length."""
    return serialized(items)[4:].decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("items", [["咨询", "投诉", "技术问题"], ["refund", "a", "账单问题"], ["只有一个"],
                                   ["The app crashes every time I open the settings page"]])
def test_profile_export_bytes_tensors_split_into_their_elements(items):
    assert split_bytes_tensor(exported(items)) == items
    assert split_bytes_tensor(serialized(items).decode("utf-8", "surrogateescape")) == items


def test_a_string_that_is_no_bytes_tensor_is_refused():
    with pytest.raises(ValueError, match="not a serialized BYTES tensor"):
        split_bytes_tensor("")


def test_input_data_holds_each_request_as_one_step():
    requests = [ClassifyRequest("快递没到", ("物流", "投诉")), ClassifyRequest("refund", ("a", "b", "c"), True)]
    data = input_data(requests)["data"]
    assert data[0] == {"TEXT": {"content": ["快递没到"], "shape": [1]},
                       "CANDIDATE_LABELS": {"content": ["物流", "投诉"], "shape": [2]},
                       "MULTI_LABEL": {"content": [False], "shape": [1]}}
    assert data[1]["CANDIDATE_LABELS"]["shape"] == [3] and data[1]["MULTI_LABEL"]["content"] == [True]


def record(text: str, labels: list[str], answer: list[str] | None, scores: list[float] | None = None) -> dict:
    outputs = [] if answer is None else [{"LABELS": exported(answer), "SCORES": scores, "SERVER_LATENCY_MS": 1.0}]
    return {"timestamp": 1, "request_inputs": {"TEXT": text, "CANDIDATE_LABELS": exported(labels),
                                               "MULTI_LABEL": False},
            "response_timestamps": [2] if outputs else [], "response_outputs": outputs}


def test_answers_are_checked_against_their_requests():
    export = {"experiments": [{"experiment": {"mode": "concurrency", "value": 2}, "requests": [
        record("快递没到", ["物流", "投诉", "表扬"], ["投诉", "物流", "表扬"], [0.7, 0.2, 0.1]),
        record("退款", ["退款", "物流"], ["退款", "账单"], [0.6, 0.4]),  # a label the request did not send
        record("好评", ["表扬", "投诉"], ["表扬", "投诉"], [0.3, 0.7]),  # scores not sorted
        record("没回", ["咨询", "投诉"], None),
        record("快递没到", ["物流", "投诉", "表扬"], ["投诉", "物流", "表扬"], [0.7, 0.2, 0.1]),  # sent twice
    ]}]}
    check = check_answers(export)
    assert (check.checked, check.wrong, check.unanswered, check.repeated) == (4, 2, 1, 1)
    assert check.labels == 3 + 2 + 2 + 3
    assert any("账单" in problem for problem in check.problems)


def test_perf_analyzer_csv_rows_become_numbers(tmp_path):
    path = tmp_path / "level.csv"
    path.write_text("Concurrency,Inferences/Second,p50 latency,p99 latency\n4,179.587,18410,69831\n")
    assert read_csv(path) == [{"Concurrency": 4.0, "Inferences/Second": 179.587, "p50 latency": 18410.0,
                               "p99 latency": 69831.0}]


@pytest.mark.parametrize("spec, levels", [("1,5,10", [1, 5, 10]), ("1:8:2", [1, 3, 5, 7]), ("4", [4]),
                                          ("2:4", [2, 3, 4])])
def test_concurrency_is_a_list_or_perf_analyzers_range(spec, levels):
    assert perf.parse_levels(spec) == levels


@pytest.mark.parametrize("spec", ["0,1", "a", "1:4:0", "", "1:2:3:4"])
def test_bad_concurrency_is_refused_with_its_value(spec):
    with pytest.raises(ValueError, match="concurrency"):
        perf.parse_levels(spec)


def test_levels_get_input_for_what_they_can_send_within_the_memory_cap():
    sweep = perf.PerfSweep(None, None, perf.Settings(interval_ms=1000, min_requests=500), None, "probabilities",
                           Path("."))
    assert sweep.input_size(1, windows=5) == 500  # nothing measured yet
    sweep.rate_per_slot = 100.0  # 100 req/s at concurrency 1
    # at most 100 x 4 req/s for 5 windows of 1 s, with 25% margin and two requests per slot in flight
    assert sweep.input_size(4, windows=5) == 100 * 4 * 5 * 1.25 + 8
    assert sweep.input_size(128, windows=11) == perf.DATA_COPIES_CAP // 128


def test_make_perf_passes_its_variables_to_a_command_that_parses():
    lines = subprocess.run(["make", "-n", "-o", ".venv/.installed", "-o", ".tools/perf-analyzer/.installed", "perf",
                            "CONCURRENCY=1,2", "PERF_URL=10.0.0.1:8001", "PROTOCOL=http", "PERF_INTERVAL_MS=800"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    [command] = [line for line in lines if "-m loadtest.perf " in line]
    argv = shlex.split(command)
    args = perf.build_parser().parse_args(argv[argv.index("loadtest.perf") + 1:])
    assert (args.concurrency, args.grpc_url, args.protocol, args.interval_ms) == ("1,2", "10.0.0.1:8001", "http", 800)


def fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_the_binary_is_taken_from_the_wheels_data_files(tmp_path):
    wheel = fake_wheel(tmp_path / "tritonclient-2.51.0-py3-none-manylinux1_x86_64.whl", {
        "tritonclient-2.51.0.data/data/bin/perf_analyzer": b"\x7fELF binary",
        "tritonclient-2.51.0.data/data/bin/perf_client": b"\x7fELF other",
    })
    target = extract_member(wheel, ".data/data/bin/perf_analyzer", tmp_path / "bin" / "perf_analyzer")
    assert target.read_bytes() == b"\x7fELF binary"
    with pytest.raises(ToolError, match="0 members ending in libcudart.so.12"):
        extract_member(wheel, "libcudart.so.12", tmp_path / "lib" / "libcudart.so.12")


def test_a_missing_perf_analyzer_names_the_make_target(tmp_path, monkeypatch):
    monkeypatch.delenv("PERF_ANALYZER", raising=False)
    with pytest.raises(ToolError, match="make perf-tools"):
        locate(tmp_path)


def test_the_tools_folder_puts_its_libraries_first_on_the_library_path(tmp_path, monkeypatch):
    monkeypatch.delenv("PERF_ANALYZER", raising=False)
    binary = tmp_path / "bin" / "perf_analyzer"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\necho 'Perf Analyzer Version 2.51.0 (commit unknown)' >&2\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    tool = locate(tmp_path)
    assert tool.env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == str(tmp_path / "lib")
    assert tool.version() == "2.51.0"
    assert library_env(tmp_path, {"LD_LIBRARY_PATH": "/x"})["LD_LIBRARY_PATH"] == f"{tmp_path}{os.pathsep}/x"
