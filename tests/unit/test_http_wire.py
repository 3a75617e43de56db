"""zsc_server.http_wire on its own: the JSON nesting check, chunk parsing and the head parser."""

from __future__ import annotations

import pytest

from zsc_server.http_wire import Inbound, Refusal, forwarded_headers, json_nesting_within, parse_request

KSERVE = b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],"data":["hello"]}]}'
DEEP = b'{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1],"data":' + b"[" * 50_000 + b"]" * 50_000 + b"}]}"


@pytest.mark.parametrize(
    "document, within",
    [
        (b"", True),
        (KSERVE, True),
        (b"[" * 32 + b"]" * 32, True),
        (b"[" * 33 + b"]" * 33, False),
        (b"{" * 20 + b"[" * 13 + b"]" * 13 + b"}" * 20, False),
        (b"[" + (b"[" * 31 + b"]" * 31 + b",") * 1000 + b"[]]", True),  # many chains just within
        (b"[" + (b"[" * 32 + b"]" * 32 + b",") * 1000 + b"[]]", False),
        (DEEP, False),
        (b'{"data": ["' + b"[" * 1000 + b'"]}', True),  # brackets inside a string
        (b'{"data": ["\\"' + b"[" * 1000 + b'\\"", "\\\\"]}', True),  # ... after an escaped quote
        (b'{"data": ["\\\\"' + b"[" * 100 + b"]" * 100 + b"]}", False),  # an escaped backslash ends it
        (b'{"a": [1, 2}', False),  # unbalanced: no JSON
        (b"]" + b"[" * 3, False),
        (b"[" * 1_000_000, False),
    ],
)
def test_json_nesting_within(document, within):
    assert json_nesting_within(document, 32) is within


def buffered(data: bytes) -> Inbound:
    inbound = Inbound(reader=None)  # take_chunks only looks at what is buffered
    inbound.buf += data
    return inbound


def test_chunks_are_taken_as_they_complete():
    inbound, body = buffered(b"3;name=value\r\nabc\r\n2\r\nde"), bytearray()
    assert not inbound.take_chunks(body, 100) and body == b"abc" and inbound.buf == b"2\r\nde"
    inbound.buf += b"\r\n0\r\nTrailer: x\r\n\r\nNEXT"
    assert inbound.take_chunks(body, 100) and body == b"abcde" and inbound.buf == b"NEXT"


@pytest.mark.parametrize(
    "data, status",
    [(b"ff\r\n", 413), (b"-1\r\n", 400), (b"1 1\r\nx\r\n", 400), (b"1\r\nxyz", 400), (b"1" * 5000, 400)],
)
def test_bad_or_large_chunks_are_refused_at_once(data, status):
    with pytest.raises(Refusal) as refusal:
        buffered(data).take_chunks(bytearray(), 100)
    assert refusal.value.status == status


def test_a_request_head_is_parsed_strictly():
    request = parse_request(b"POST /v2/x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nConnection: close", 100)
    assert (request.method, request.target, request.http10, request.keep_alive) == (b"POST", b"/v2/x", False, False)
    assert request.fields[b"x-a"] == b"1, 2" and request.headers[1] == (b"X-A", b"1")
    assert not parse_request(b"GET / HTTP/1.0", 100).keep_alive
    for header in (b"X : 1", b"X: a\rb", b"X: a\nb", b"X: 1\r\n folded", b"X\r\n"):
        with pytest.raises(Refusal):
            parse_request(b"GET / HTTP/1.1\r\n" + header, 100)
    with pytest.raises(Refusal):
        parse_request(b"GET  / HTTP/1.1", 100)


def test_hop_by_hop_headers_are_not_forwarded():
    headers = [(b"Connection", b"X-Mine"), (b"X-Mine", b"1"), (b"Proxy-Authorization", b"s"), (b"TE", b"trailers"),
               (b"Content-Length", b"9"), (b"Content-Type", b"application/json")]
    assert forwarded_headers(headers, b"X-Mine") == b"Content-Type: application/json\r\n"
