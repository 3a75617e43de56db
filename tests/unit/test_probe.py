"""zsc_server.probe's reading of Triton's refusals. The messages are Triton 2.51's own, as it sent them
(test_overload.py fills a real queue; a 1 ms queue timeout gave the second); the probe under a real
full queue is tested in tests/integration/test_overload.py, on a dead stub in test_faults.py."""

from zsc_server.probe import is_busy


def test_a_full_or_slow_queue_is_busy_not_broken():
    assert is_busy(503, '{"error":"in ensemble \'zero_shot\', [request id: <id_unknown>] Exceeds maximum queue size"}')
    assert is_busy(503, '{"error":"in ensemble \'zero_shot\', Request timeout expired"}')


def test_a_dead_stub_or_a_missing_model_is_broken():
    assert not is_busy(500, '{"error":"in ensemble \'zero_shot\', Stub process \'encoder_0_0\' is not healthy."}')
    assert not is_busy(400, '{"error":"Request for unknown model: \'zero_shot\' is not found"}')
    assert not is_busy(503, '{"error":"Server is stopping"}')
