"""Admission control's rule (zsc_server.admission) on a clock the test drives; the served behaviour under a
flood is in tests/integration/test_overload.py."""

from __future__ import annotations

import multiprocessing

import pytest

from zsc_server.admission import AdmissionGate, AdmissionSettings

MS = 1_000_000  # ns


@pytest.fixture
def gate(tmp_path):
    gate = AdmissionGate(AdmissionSettings(target_ms=50, interval_ms=100, min_answers=4), tmp_path / "state")
    yield gate
    gate.close()


def answer_interval(gate: AdmissionGate, start_ms: int, sojourns_ms: list[float]) -> None:
    """Answers spread over one 100 ms interval starting at start_ms."""
    for i, sojourn in enumerate(sojourns_ms):
        gate.answered(sojourn, (start_ms + i * 100 // len(sojourns_ms)) * MS)


def test_a_standing_queue_refuses_new_requests_until_the_next_verdict(gate):
    answer_interval(gate, 0, [60, 80, 70, 90, 65])  # even the best waited 60 > 50 ms
    assert gate.admit(99 * MS) is None  # the interval is not over yet
    gate.answered(70, 100 * MS)  # closes it: standing queue
    reason = gate.admit(101 * MS)
    assert reason and reason.startswith("busy: requests have waited over 50 ms")
    gate.answered(75, 180 * MS)  # answers keep coming, within the interval: still refusing
    assert gate.admit(250 * MS) is not None  # 70 ms since the last answer
    assert gate.counts() == (1, 2)


def test_refusal_outlasts_the_gaps_of_clumped_answers_but_lapses_when_answers_stop(gate):
    answer_interval(gate, 0, [400] * 5)  # big batches: answers come in clumps, each waited 400 ms
    gate.answered(400, 100 * MS)  # standing, with a shortest sojourn of 400 ms
    assert gate.admit(850 * MS) is not None  # 750 ms without an answer: a gap between clumps, still refusing
    assert gate.admit(901 * MS) is None  # 801 ms > twice the standing sojourn: it lapsed, no lock-out


def test_one_short_wait_in_the_interval_means_no_standing_queue(gate):
    answer_interval(gate, 0, [60, 80, 10, 90, 65])  # one request went straight through
    gate.answered(70, 100 * MS)
    assert gate.admit(101 * MS) is None


def test_a_few_long_requests_at_low_load_refuse_nobody(gate):
    answer_interval(gate, 0, [300, 400])  # two long texts with many labels: slow, but no queue
    gate.answered(350, 100 * MS)
    assert gate.admit(101 * MS) is None


def test_refusal_lasts_while_the_queue_stands_and_ends_when_it_drains(gate):
    answer_interval(gate, 0, [60] * 5)
    answer_interval(gate, 100, [70] * 5)  # closes the first interval: refuse until 200
    assert gate.admit(150 * MS) is not None
    answer_interval(gate, 200, [55] * 5)  # closes the second (min 70): refuse until 300
    assert gate.admit(250 * MS) is not None
    answer_interval(gate, 300, [20] * 5)  # closes the third (min 55): refuse until 400
    gate.answered(20, 400 * MS)  # closes the fourth (min 20): drained
    assert gate.admit(401 * MS) is None


def _admit_many(path: str, count: int) -> None:
    gate = AdmissionGate(AdmissionSettings(target_ms=50), path)
    for _ in range(count):
        gate.admit()
    gate.close()


def test_processes_share_one_state(tmp_path):
    path = tmp_path / "state"
    workers = [multiprocessing.Process(target=_admit_many, args=(str(path), 500)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    gate = AdmissionGate(AdmissionSettings(target_ms=50), path)
    assert gate.counts() == (1500, 0)  # no update lost between processes
    gate.close()


def test_settings_round_trip_and_off_by_default():
    settings = AdmissionSettings(target_ms=120, interval_ms=250, min_answers=3)
    assert AdmissionSettings.from_parameters(settings.to_parameters()) == settings
    assert not AdmissionSettings.from_parameters({}).enabled


def test_the_automatic_target_is_three_times_the_quickest_recent_answer(tmp_path):
    gate = AdmissionGate(AdmissionSettings(), tmp_path / "auto")  # target auto, interval at least 100 ms
    assert gate.admit(0) is None and gate.service_ms() is None
    answer_interval(gate, 0, [12, 10, 14, 11, 13])  # unloaded: the quickest answer took 10 ms
    gate.answered(36, 100 * MS)  # closes the first interval (its quickest: 10 < 30 ms, no queue)
    assert gate.service_ms() == 10 and gate.admit(101 * MS) is None
    answer_interval(gate, 100, [35, 40, 45, 50, 38])  # a queue: even the quickest waited 35 > 3 x 10 ms
    gate.answered(40, 200 * MS)
    reason = gate.admit(201 * MS)
    assert reason and reason.startswith("busy: requests have waited over 30 ms")
    gate.close()


def test_a_slow_model_gets_intervals_of_ten_service_times(tmp_path):
    gate = AdmissionGate(AdmissionSettings(), tmp_path / "slow")
    gate.answered(300, 0)  # a CPU model whose quickest answer takes 300 ms
    gate.answered(1000, 3000 * MS)  # closes the first 3 s interval (10 x 300 ms): its quickest was 300 ms
    for t in (3400, 3800, 4200, 4600, 5000, 5400):  # answers waiting 1 s: a queue of a few requests
        gate.answered(1000, t * MS)
    assert gate.admit(5500 * MS) is None  # within the second 3 s interval: no verdict yet
    gate.answered(1000, 6000 * MS)  # closes it: 1 s > 900 ms, with 7 answers
    assert gate.admit(6001 * MS) is not None
    gate.close()


def test_off_and_fixed_targets_parse():
    assert AdmissionSettings.parse_target("auto") == (True, None)
    assert AdmissionSettings.parse_target("off") == AdmissionSettings.parse_target("0") == (False, None)
    assert AdmissionSettings.parse_target("250") == (True, 250.0)
    with pytest.raises(ValueError):
        AdmissionSettings.parse_target("-5")
    auto = AdmissionSettings()
    assert AdmissionSettings.from_parameters(auto.to_parameters()) == auto
    assert AdmissionSettings.from_parameters(AdmissionSettings(enabled=False).to_parameters()).enabled is False
