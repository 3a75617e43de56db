"""zsc_server.triton_errors: the message texts the server side acts on, and the client's own copy of them."""

from __future__ import annotations

from tritonclient.utils import InferenceServerException

from zsc_client import InvalidInputError, ServerUnavailableError
from zsc_client.errors import translate
from zsc_server.probe import is_busy
from zsc_server.triton_errors import dead_stub_instances, queue_refused, refusal_kind

# as Triton 2.51 words them (tests/integration/test_overload.py and test_faults.py see them for real)
QUEUE_FULL = "in ensemble 'zero_shot', inference request to model 'encoder' exceeds maximum queue size"
QUEUE_TIMEOUT = "in ensemble 'zero_shot', Request timeout expired"
ADMISSION = ("busy: requests would wait about 150 ms for the encoder, over the latency budget of 100 ms "
             "(admission control); retry later")
EDGE_BUSY = "busy: the server is at the edge proxy's concurrency limit; retry later"
EDGE_TIMEOUT = ("unavailable: the server behind the edge proxy did not take the call in time (busy, or restarting); "
                "retry later")
DEAD_STUB = ("in ensemble 'zero_shot', Failed to process the request(s) for model 'encoder_0_0', message: "
             "Stub process 'encoder_0_0' is not healthy.")


def test_refusals_for_load_are_told_apart():
    assert [refusal_kind(m) for m in (QUEUE_FULL, QUEUE_TIMEOUT, ADMISSION, EDGE_BUSY, EDGE_TIMEOUT, DEAD_STUB)] == [
        "queue full", "queue timeout", "admission", "edge", "edge", None]
    assert is_busy(503, EDGE_BUSY) and is_busy(503, EDGE_TIMEOUT)
    assert queue_refused(QUEUE_FULL) and queue_refused(QUEUE_TIMEOUT) and not queue_refused(ADMISSION)
    assert is_busy(503, QUEUE_TIMEOUT) and is_busy(503, ADMISSION) and not is_busy(400, QUEUE_FULL)
    assert not is_busy(503, DEAD_STUB)


def test_admission_control_words_its_refusal_as_the_marker_says():
    import inspect

    from zsc_server import admission

    assert "busy: requests would wait about" in inspect.getsource(admission)


def test_the_edge_proxy_words_its_refusals_as_the_markers_say():
    from zsc_server.edge import CONFIG

    for name, marker in (("grpc-busy.http", EDGE_BUSY), ("http-busy.http", EDGE_BUSY),
                         ("grpc-unavailable.http", EDGE_TIMEOUT), ("http-unavailable.http", EDGE_TIMEOUT)):
        assert marker in (CONFIG.parent / name).read_text(encoding="utf-8"), name


def test_a_dead_stub_is_named_by_its_instance():
    assert dead_stub_instances(DEAD_STUB) == {"encoder_0_0"}
    assert dead_stub_instances(QUEUE_FULL) == set()


def test_the_client_calls_the_same_messages_retryable():
    """The client keeps its own markers (it is installable without the server): they agree with these."""
    for message in (DEAD_STUB, QUEUE_FULL, QUEUE_TIMEOUT, ADMISSION, EDGE_BUSY, EDGE_TIMEOUT):
        assert isinstance(translate(InferenceServerException(message, status="503")), ServerUnavailableError)
    # a dead stub answers with status 500 / INTERNAL: still "retry later", not the caller's fault
    assert isinstance(translate(InferenceServerException(DEAD_STUB, status="StatusCode.INTERNAL")),
                      ServerUnavailableError)
    assert isinstance(translate(InferenceServerException("TEXT: is empty", status="400")), InvalidInputError)
