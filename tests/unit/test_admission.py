"""Admission control's ledger (zsc_server.admission) on a clock the test drives; the served behaviour under a
flood is in tests/integration/test_overload.py."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
import time

import pytest

from export.repository import ServingSettings, preprocess_config, to_pbtxt
from zsc_server.admission import AdmissionGate, AdmissionSettings, FrontGate, parse_budget
from zsc_server.settings import ScoringSettings

MS = 1_000_000  # ns
SETTINGS = AdmissionSettings(budget_ms=100, row_ms=2.0, encoder_instances=1, forget_ms=1000)


@pytest.fixture
def gate(tmp_path):
    gate = AdmissionGate(SETTINGS, tmp_path / "state")
    yield gate
    gate.close()


def test_an_idle_server_admits_any_request_however_large(gate):
    assert gate.admit(10_000, now_ns=0) is None  # 20 s of work, but nothing waits before it
    assert gate.wait_ms(0) == pytest.approx(20_000)


def test_a_request_is_refused_when_the_booked_work_exceeds_the_budget(gate):
    for _ in range(5):
        assert gate.admit(10, now_ns=0) is None  # 5 x 10 rows x 2 ms: 100 ms booked, within the budget
    assert gate.admit(1, now_ns=0) is None  # 100 ms is not over it: admitted, 102 ms booked
    reason = gate.admit(1, now_ns=0)
    assert reason and reason.startswith("busy: requests would wait about 102 ms for the encoder")
    assert "latency budget of 100 ms" in reason
    assert gate.counts() == (6, 1)


def test_executions_strike_off_the_oldest_rows_and_make_room(gate):
    gate.admit(30, now_ns=0)  # bucket 0
    gate.admit(30, now_ns=150 * MS)  # bucket 1: 120 ms booked
    assert gate.admit(1, now_ns=150 * MS) is not None
    gate.executed(40, 0.080, now_ns=200 * MS)  # 40 rows at 2 ms: the first 30, then 10 of the second
    assert gate.wait_ms(200 * MS) == pytest.approx(40)  # 20 rows left at 2 ms
    assert gate.admit(1, now_ns=200 * MS) is None


def test_the_time_per_row_follows_the_executions_weighted_by_rows(gate):
    assert gate.row_ms() == pytest.approx(2.0)  # the export's measurement, until executions outweigh it
    for _ in range(30):
        gate.executed(64, 64 * 0.008)  # the encoder runs at 8 ms per row here (a busy shared core)
    assert gate.row_ms() == pytest.approx(8.0, rel=0.01)
    gate.admit(10, now_ns=0)
    assert gate.wait_ms(0) == pytest.approx(80, rel=0.01)


def test_rows_that_never_reach_the_encoder_are_forgotten(gate):
    gate.admit(100, now_ns=0)  # refused by the encoder's queue later, say: nobody strikes them off
    assert gate.admit(1, now_ns=900 * MS) is not None
    assert gate.admit(1, now_ns=1100 * MS) is None  # older than forget_ms: no longer waiting for anything


def test_instances_share_the_work(tmp_path):
    gate = AdmissionGate(AdmissionSettings(budget_ms=100, row_ms=2.0, encoder_instances=2), tmp_path / "two")
    gate.admit(50, now_ns=0)
    assert gate.wait_ms(0) == pytest.approx(50)  # 50 rows x 2 ms over two instances
    gate.close()


def test_a_held_request_is_admitted_when_an_execution_makes_room(gate):
    gate.admit(60)  # 120 ms booked: over the budget
    threading.Timer(0.05, lambda: gate.executed(60, 0.12)).start()
    started = time.monotonic()
    assert gate.admit(1, hold_s=2.0) is None
    assert 0.04 < time.monotonic() - started < 1.0
    assert gate.counts() == (2, 0)


def test_a_held_request_without_room_is_refused_once_the_hold_is_over(gate):
    gate.admit(60)
    started = time.monotonic()
    assert gate.admit(1, hold_s=0.05) is not None
    assert 0.05 <= time.monotonic() - started < 1.0


def test_charged_rows_count_without_a_decision(gate):
    gate.admit(55, now_ns=0)  # 110 ms: the next request is refused
    gate.executed(55, 0.11, now_ns=0)
    gate.charge(200, now_ns=0)  # the label cache's misses, found after admission
    assert gate.over_budget(now_ns=0) is not None and gate.counts() == (1, 0)  # the fronts' check books nothing


def _admit_many(path: str, count: int) -> None:
    gate = AdmissionGate(AdmissionSettings(budget_ms=1e9), path)
    for _ in range(count):
        gate.admit(1, now_ns=0)
    gate.close()


def test_processes_share_one_state(tmp_path):
    path = tmp_path / "state"
    workers = [multiprocessing.Process(target=_admit_many, args=(str(path), 500)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    gate = AdmissionGate(AdmissionSettings(budget_ms=1e9), path)
    assert gate.counts() == (1500, 0)  # no update lost between processes
    assert gate.wait_ms(0) == pytest.approx(1500)  # 1,500 rows booked at 1 ms
    gate.close()


def test_settings_round_trip_and_off_by_default():
    assert AdmissionSettings.from_parameters(SETTINGS.to_parameters()) == SETTINGS
    assert not AdmissionSettings.from_parameters({}).enabled
    assert not AdmissionSettings.from_parameters(AdmissionSettings().to_parameters()).enabled


def test_budgets_parse():
    assert parse_budget("auto") == "auto"
    assert parse_budget("off") is None and parse_budget("0") is None
    assert parse_budget("250") == 250.0
    with pytest.raises(ValueError):
        parse_budget("-5")
    with pytest.raises(ValueError):
        parse_budget("soon")


def test_the_fronts_read_the_settings_the_export_wrote(tmp_path, monkeypatch):
    (tmp_path / "preprocess").mkdir()
    config = preprocess_config(ScoringSettings(), ServingSettings(admission=SETTINGS))
    (tmp_path / "preprocess" / "config.pbtxt").write_text(to_pbtxt(config))
    front = FrontGate.for_repository(tmp_path)
    assert front is not None and front.settings == SETTINGS
    with front.forwarding() as reason:
        assert reason is None  # no tritonserver followed yet: nothing to refuse
    monkeypatch.setattr("zsc_server.admission.SHM", tmp_path)
    front.follow(4242)
    server_side = AdmissionGate(SETTINGS, tmp_path / "zsc-admission-4242")
    server_side.admit(60)
    with front.forwarding() as reason:
        assert reason.startswith("busy: requests would wait")
    server_side.close()
    off = preprocess_config(ScoringSettings(), ServingSettings())
    (tmp_path / "preprocess" / "config.pbtxt").write_text(to_pbtxt(off))
    assert FrontGate.for_repository(tmp_path) is None


def test_the_export_resolves_the_budget():
    from export.pipeline import ExportError, SampleTiming, admission_settings
    from export.repository import Runtime

    sample = SampleTiming(ms=6.0, rows=6)  # MiniLM INT8 on 2 cores, about
    auto = admission_settings("auto", sample, 600, 1, Runtime.PYTHON_OV)
    assert (auto.budget_ms, auto.row_ms, auto.hold_ms, auto.forget_ms) == (150, 1.0, 37.5, 750)  # 24 x 6: floor
    slower = admission_settings("auto", SampleTiming(10.0, 6), 600, 1, Runtime.PYTHON_OV)
    assert (slower.budget_ms, slower.hold_ms, slower.forget_ms) == (240, 50, 840)  # 24 x 10 ms
    assert admission_settings("auto", SampleTiming(1.0, 6), 600, 1, Runtime.PYTHON_ORT).budget_ms == 150  # floor
    assert admission_settings("auto", SampleTiming(100.0, 6), 10_000, 1, Runtime.PYTHON_ORT).budget_ms == 2400
    assert admission_settings("auto", sample, 1, 1, Runtime.PYTHON_ORT).budget_ms == 1  # half the queue's
    assert admission_settings(250.0, sample, 600, 2, Runtime.PYTHON_ORT).budget_ms == 250
    assert not admission_settings("auto", None, 600, 1, Runtime.PYTHON_TORCH).enabled  # a GPU: nothing measured
    assert not admission_settings(None, sample, 600, 1, Runtime.PYTHON_ORT).enabled
    # the native backends report no executions, so nothing would strike booked rows off
    assert not admission_settings("auto", sample, 600, 1, Runtime.OPENVINO).enabled
    with pytest.raises(ExportError, match="--runtime onnxruntime has none"):
        admission_settings(200.0, sample, 600, 1, Runtime.ONNXRUNTIME)


def test_the_fronts_keep_about_a_budgets_worth_of_correct_answers_in_flight(admission):
    front_gate, server_side = admission  # budget 100 ms
    front_gate.min_in_flight = 4
    with contextlib.ExitStack() as held:
        for _ in range(4):  # nothing answered yet: the floor, 4 at once
            assert held.enter_context(front_gate.forwarding()) is None
        assert front_gate.in_flight == 4
        with front_gate.forwarding() as refused:  # not counted, and its wait by Little's law: 5 x 100 / 4 ms
            assert refused.startswith("busy: requests would wait about 125 ms") and front_gate.in_flight == 4
        for _ in range(100):  # 100 correct answers in the last second: 10 may be in flight (100/s x 100 ms)
            front_gate.answered()
        for _ in range(6):
            assert held.enter_context(front_gate.forwarding()) is None
        with front_gate.forwarding() as refused:
            assert refused is not None and front_gate.in_flight == 10
    assert front_gate.in_flight == 0
    assert front_gate.max_in_flight(time.monotonic() + 2.0) == 4  # the answers have left the window
    assert server_side.wait_ms() == 0  # none of it was booked: the ledger's own check is apart
    server_side.admit(60)
    with front_gate.forwarding() as reason:
        assert reason.startswith("busy: requests would wait about 120 ms")
