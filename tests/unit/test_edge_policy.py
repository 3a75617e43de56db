"""The launcher's edge proxy policy (zsc_server.edge): when it runs, and how many calls it lets on to the fronts.
tests/integration/test_edge.py runs it with a real haproxy."""

from __future__ import annotations

import time

import pytest

from zsc_server.admission import AdmissionSettings, FrontGate
from zsc_server.batching_policy import EDGE_MIN_IN_FLIGHT
from zsc_server.edge import EdgeError, edge_in_flight, edge_wanted

GATE = FrontGate(AdmissionSettings(budget_ms=200))


@pytest.mark.parametrize(("mode", "front", "gate", "haproxy", "runs"), [
    ("auto", "on", GATE, "/usr/sbin/haproxy", True),
    ("on", "on", GATE, "/usr/sbin/haproxy", True),
    ("auto", "on", GATE, None, False),  # not installed: the fronts shed alone
    ("auto", "on", None, "/usr/sbin/haproxy", False),  # no admission control (GPU exports)
    ("auto", "http", GATE, "/usr/sbin/haproxy", False),  # the gRPC front is off
    ("off", "on", GATE, "/usr/sbin/haproxy", False),
])
def test_the_edge_runs_where_haproxy_both_fronts_and_their_admission_control_are(mode, front, gate, haproxy, runs):
    wanted, reason = edge_wanted(mode, front, gate, haproxy)
    assert wanted is runs
    assert reason.startswith("haproxy on the public ports" if runs else "off (")


@pytest.mark.parametrize(("front", "gate", "haproxy", "why"), [
    ("on", GATE, None, "haproxy is not installed"),
    ("on", None, "/usr/sbin/haproxy", "admission control is off"),
    ("http", GATE, "/usr/sbin/haproxy", "in front of both fronts"),
])
def test_edge_on_says_why_it_cannot_run(front, gate, haproxy, why):
    with pytest.raises(EdgeError, match=why):
        edge_wanted("on", front, gate, haproxy)


def test_the_edge_lets_on_half_a_budgets_worth_of_answers_and_never_fewer_than_its_floor():
    gate = FrontGate(AdmissionSettings(budget_ms=200))
    assert edge_in_flight(gate) == EDGE_MIN_IN_FLIGHT  # nothing answered yet
    for _ in range(400):  # 400 correct answers/s x 200 ms x 0.5 = 40
        gate.answered()
    assert edge_in_flight(gate) == 40
    assert gate.max_in_flight() == 80  # the fronts' own bound: a whole budget's worth
    assert edge_in_flight(gate, time.monotonic() + 2.0) == EDGE_MIN_IN_FLIGHT  # the answers left the window
