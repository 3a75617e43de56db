"""The texts of Triton's (and our own) error messages that the project acts on, in one place: the encoder call,
the health probe, the launcher's reviver and the soak's bookkeeping read messages through these. (The client
package, installable alone, keeps its own copy of what it needs; tests/unit/test_triton_errors.py holds the
two together.)

Triton reports these only as text: a refused or failed request carries a status code and a message, and the
message is what tells a full queue from a timed-out one, or names the instance whose stub died.
"""

from __future__ import annotations

import re

# Triton's dynamic batcher, refusing for load (HTTP 503 / gRPC UNAVAILABLE)
QUEUE_FULL = "exceeds maximum queue size"
QUEUE_TIMEOUT = "request timeout expired"
# zsc_server.admission, refusing before the preprocess tokenizes ("busy: requests would wait about ...")
ADMISSION_BUSY = "busy: requests would wait"
# zsc_server.edge's haproxy: its queue full, or a call that waited there past its time (zsc_server/haproxy/*.http);
# with the launcher alive behind it (haproxy dies with the launcher), both mean busy
EDGE_BUSY = "at the edge proxy's concurrency limit"
EDGE_TIMEOUT = "behind the edge proxy did not take the call in time"
# an API the launcher restricts (zsc_server.admin_api), called without its secret: "This API is restricted" /
# "This protocol is restricted, expecting header ..."
RESTRICTED = "is restricted"
# a Python-backend model whose stub process died: every request to it fails so until it is reloaded
DEAD_STUB = re.compile(r"Stub process '([^']+)' is not healthy")


def refusal_kind(message: str) -> str | None:
    """'admission', 'edge', 'queue full' or 'queue timeout' when `message` is a refusal for load, else None."""
    message = message.lower()
    if ADMISSION_BUSY in message:
        return "admission"
    if EDGE_BUSY in message or EDGE_TIMEOUT in message:
        return "edge"
    if QUEUE_FULL in message:
        return "queue full"
    if QUEUE_TIMEOUT in message:
        return "queue timeout"
    return None


def queue_refused(message: str) -> bool:
    """Triton's bounded encoder queue refused the request (full, or waited past its timeout)."""
    return refusal_kind(message) in ("queue full", "queue timeout")


def dead_stub_instances(message: str) -> set[str]:
    """Instance names (e.g. encoder_0_0) that Triton says have a dead stub in `message`."""
    return set(DEAD_STUB.findall(message))
