"""The HTTP front: a small HTTP/1.1 reverse proxy on the public HTTP port, in front of tritonserver's own
HTTP endpoint on a private loopback port, that refuses what tritonserver 2.51 cannot take safely.

Why: tritonserver 2.51 has no flag that bounds an HTTP request, and measured against it
- a JSON body nested 50,000 deep, and a chunked upload of 600,000 one-byte chunks, crash it (SIGSEGV);
- it inflates a gzip request body without bound (502 KB inflating to 500 MiB cost +3 GB RSS);
- it copies a 100 MB body into memory before the models can refuse it.
So the front bounds the request head, the body (413 before reading it when Content-Length says so), the
JSON nesting (400) and refuses compressed requests (415); it forwards a chunked upload as one body with
Content-Length. What an inference request may ask (the ensemble alone, no classification extension, no answer
cut to some outputs) is zsc_server.inference_request's, shared with the gRPC front. Responses pass through
unchanged, compressed ones included.

Standard library only (asyncio streams), Python 3.10 to 3.12: the launcher runs it with the plain python3
of the NGC Triton image. One event loop in one daemon thread. It logs nothing per request: `counters`
says what it forwarded and refused, by reason. Parsing and checking messages lives in zsc_server.http_wire.

Beyond max_connections a new connection is accepted, answered 503 with Connection: close and closed, so a
client learns why at once instead of waiting in the listen backlog.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import Callable

from zsc_server.front_thread import RESTARTING, FrontThread, StopReport
from zsc_server.http_wire import (
    READ_SIZE,
    Inbound,
    PeerClosed,
    Refusal,
    Request,
    connection_tokens,
    error_response,
    forwarded_headers,
    json_nesting_within,
    parse_request,
    relay_body,
    response_head,
    shown,
)
from zsc_server.inference_request import GENERATE_PATH, is_infer, json_problem


@dataclasses.dataclass(frozen=True)
class FrontLimits:
    """What the front lets through and how long it waits; each default is written here only."""

    # The largest legitimate request, a 64 KiB text + 64 KiB of labels + a 1 KiB template in KServe v2
    # JSON, is about 0.8 MiB even with every character \u-escaped
    max_body_bytes: int = 1 << 20
    max_json_depth: int = 32  # a KServe v2 request nests about 5 deep
    max_header_bytes: int = 64 << 10  # request line and header lines together
    max_headers: int = 100
    header_timeout_s: float = 30.0  # an idle keep-alive connection, then reading one request head
    body_timeout_s: float = 30.0  # reading one whole request body
    max_connections: int = 1024
    upstream_idle_connections: int = 16  # keep-alive connections to tritonserver kept open between requests


FAILED = "the inference server failed while answering"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER_S = 2.0  # how long a refused connection's remaining input is read and dropped before closing


class _Upstream:
    """One keep-alive connection to tritonserver on `port`, used by one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int):
        self.inbound, self.writer, self.port = Inbound(reader), writer, port

    def usable(self, port: int) -> bool:
        """Still open, with nothing unread, and to tritonserver's current port."""
        closed = self.writer.is_closing() or self.inbound.reader.at_eof()
        return port == self.port and not closed and not self.inbound.buf

    def close(self) -> None:
        self.writer.close()


class _Connection:
    """A client connection: its buffer, its writer, whether it waits idle for a request, and its watchdog
    (a timer that cuts it when a read takes too long; cheaper than a wait_for task per read)."""

    def __init__(self, front: HttpFront, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.front, self.inbound, self.writer = front, Inbound(reader), writer
        self.idle = True
        self.linger = False  # set by a refusal that closes the connection with input left unread
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, seconds: float, reason: str | None) -> None:
        self.disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire, reason)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, reason: str | None) -> None:
        if reason:
            self.front._count(reason)
        self.writer.transport.abort()


class HttpFront(FrontThread):
    """The front on listen_host:listen_port, forwarding to upstream_host:upstream_port (see the module).
    upstream_port may be changed while it runs: the next request goes to the new port."""

    thread_name = "http-front"

    def __init__(self, listen_host: str, listen_port: int, upstream_host: str, upstream_port: int,
                 limits: FrontLimits = FrontLimits()):
        super().__init__()
        self.listen_host, self.listen_port = listen_host, listen_port
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.limits = limits
        self.port = listen_port  # the bound port once started (listen_port 0 picks a free one)
        self._connections: dict[asyncio.Task, _Connection] = {}
        self._idle_upstreams: list[_Upstream] = []
        self._draining = False

    @property
    def counters(self) -> dict[str, int]:
        """{"forwarded": n, <refusal reason>: n, ...}, safe to read from any thread."""
        return self._counts_now()

    def start(self) -> HttpFront:
        """Binds now (OSError naming the address when that fails), then serves in a daemon thread."""
        family = socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET
        try:
            listener = socket.create_server((self.listen_host, self.listen_port), family=family,
                                            backlog=min(self.limits.max_connections, 4096))
        except OSError as error:
            raise OSError(error.errno, f"the HTTP front cannot listen on {self.listen_host}:{self.listen_port}: "
                          f"{error.strerror}") from error
        self.port = listener.getsockname()[1]
        try:
            self._serve_in_thread(lambda: asyncio.start_server(self._serve, sock=listener))
        except BaseException:
            listener.close()
            raise
        return self

    async def _shutdown(self, drain_timeout_s: float) -> StopReport:
        self._draining = True
        self._server.close()
        busy = []
        for task, connection in list(self._connections.items()):
            if connection.idle and not connection.inbound.buf:
                connection.writer.close()
            else:
                busy.append(task)
        cut: set[asyncio.Task] = set()
        if busy:
            _, cut = await asyncio.wait(busy, timeout=drain_timeout_s)
        for task in cut:
            self._connections[task].writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for upstream in self._idle_upstreams:
            upstream.close()
        await asyncio.sleep(0)  # lets the transports just closed release their sockets
        return StopReport(in_flight=len(busy), cut=len(cut))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, reader, writer)
        if self._draining or len(self._connections) >= self.limits.max_connections:
            if not self._draining:
                self._count("too_many_connections")
                writer.write(error_response(503, f"over {self.limits.max_connections} connections are open "
                                            "(max_connections)", close=True))
            writer.close()
            return
        task = asyncio.current_task()
        self._connections[task] = connection
        try:
            while await self._one_request(connection):
                pass
            if connection.linger:
                await self._linger(connection)
        except (PeerClosed, OSError, asyncio.CancelledError):  # OSError: a client gone before the linger
            pass
        finally:
            connection.disarm()
            del self._connections[task]
            writer.close()

    async def _linger(self, connection: _Connection) -> None:
        """Reads and drops what a refused client still sends, for a moment: closing a socket with unread
        input sends a TCP reset, which can destroy the response before the client has read it."""
        connection.idle = True  # the response is out: stop() may close it at once
        connection.inbound.buf.clear()
        connection.writer.write_eof()
        connection.arm(LINGER_S, None)
        while await connection.inbound.reader.read(READ_SIZE):
            pass

    async def _one_request(self, connection: _Connection) -> bool:
        """Reads, checks and forwards one request; whether the connection serves another."""
        limits, inbound = self.limits, connection.inbound
        connection.idle = True
        connection.arm(limits.header_timeout_s, "header_timeout")
        request = None
        try:
            head = await inbound.head(limits.max_header_bytes)
            connection.idle = False
            request = parse_request(head, limits.max_headers)
            if GENERATE_PATH.search(request.target.split(b"?")[0]):
                raise Refusal(404, "not_served", "the generate extension is not served: POST "
                              "/v2/models/<model>/infer")
            connection.arm(limits.body_timeout_s, "body_timeout")
            body = await self._read_body(connection, request)
            connection.disarm()
        except Refusal as refusal:
            self._count(refusal.reason)
            close = refusal.close or request is None or not request.keep_alive or self._draining
            connection.linger = close
            connection.writer.write(error_response(refusal.status, refusal.message, close, refusal.headers))
            await connection.writer.drain()
            return not close
        if not (request.method == b"POST" and is_infer(request.target)):
            return await self._forward(connection, request, body)
        with self.admission.forwarding() as reason:
            if reason:  # refused here, it costs tritonserver nothing
                return await self._answer(connection, request, 503, "busy", reason, b"Retry-After: 1\r\n")
            return await self._forward(connection, request, body, self.admission.answered)

    async def _read_body(self, connection: _Connection, request: Request) -> bytes | None:
        """The request's body, None when it has none; a Refusal for what Triton must not see."""
        fields, limit = request.fields, self.limits.max_body_bytes
        chunked, length = fields.get(b"transfer-encoding"), fields.get(b"content-length")
        if chunked is not None and (length is not None or request.http10):
            raise Refusal(400, "bad_framing", "request has both Transfer-Encoding and Content-Length, or "
                           "Transfer-Encoding in HTTP/1.0")
        if chunked is not None and chunked.lower() != b"chunked":
            raise Refusal(400, "bad_framing", f"transfer coding {shown(chunked)} is not supported "
                           "(Transfer-Encoding: chunked only)")
        if length is not None and (not length.isdigit() or len(length) > 18):
            raise Refusal(400, "bad_framing", f"malformed Content-Length {shown(length)}")
        if length is not None and int(length) > limit:
            raise Refusal(413, "body_too_large", f"request body of {int(length)} bytes is over the limit of "
                           f"{limit} (max_body_bytes)")
        encoding = fields.get(b"content-encoding", b"identity").lower()
        if encoding != b"identity":
            raise Refusal(415, "content_encoding", f"request Content-Encoding {shown(encoding)} is not "
                           "supported (identity only)")
        expect = fields.get(b"expect")
        if expect is not None and not request.http10:
            if expect.lower() != b"100-continue":
                raise Refusal(417, "expectation", f"Expect {shown(expect)} is not supported (100-continue only)")
            buffered = len(connection.inbound.buf)
            if (chunked is not None and not buffered) or buffered < int(length or 0):
                connection.writer.write(CONTINUE)
        if chunked is not None:
            body = bytes(await connection.inbound.chunked(limit))
        elif length is not None:
            body = await connection.inbound.exactly(int(length))
        else:
            return None
        json_part = body
        header_length = fields.get(b"inference-header-content-length")
        if header_length is not None:
            if not header_length.isdigit() or int(header_length) > len(body):
                raise Refusal(400, "bad_framing", f"Inference-Header-Content-Length {shown(header_length)} does "
                               f"not fit the body of {len(body)} bytes", close=False)
            json_part = body[: int(header_length)]
        if not json_nesting_within(json_part, self.limits.max_json_depth):
            raise Refusal(400, "json_too_deep", f"request JSON nests deeper than {self.limits.max_json_depth} "
                           "levels, or its brackets do not balance (max_json_depth)", close=False)
        problem = json_problem(request.target, json_part) if request.method == b"POST" else None
        if problem:  # what tritonserver must not read (zsc_server.inference_request)
            raise Refusal(problem.status, problem.reason, problem.message, close=False)
        return body

    async def _upstream(self) -> tuple[_Upstream, bool]:
        """A keep-alive connection to tritonserver, and whether it is a pooled (reused) one."""
        port = self.upstream_port  # the launcher moves it when tritonserver restarts on other ports
        while self._idle_upstreams:
            upstream = self._idle_upstreams.pop()
            if upstream.usable(port):
                return upstream, True
            upstream.close()
        reader, writer = await asyncio.open_connection(self.upstream_host, port)
        return _Upstream(reader, writer, port), False

    async def _forward(self, connection: _Connection, request: Request, body: bytes | None,
                       answered: Callable[[], None] | None = None) -> bool:
        """Forwards the request and relays the answer; `answered()` once a 200 has been relayed."""
        head = b"%s %s HTTP/1.1\r\n" % (request.method, request.target)
        head += forwarded_headers(request.headers, request.fields.get(b"connection", b""))
        if b"host" not in request.fields:  # an HTTP/1.0 request may lack it, an HTTP/1.1 one must not
            head += b"Host: %s:%d\r\n" % (self.upstream_host.encode(), self.upstream_port)
        if body is not None:
            head += b"Content-Length: %d\r\n" % len(body)
        head += b"\r\n"
        upstream = None
        try:
            for attempt in (1, 2):
                try:
                    upstream, reused = await self._upstream()
                except OSError:
                    retry = b"Retry-After: 1\r\n"
                    return await self._answer(connection, request, 503, "upstream_down", RESTARTING, retry)
                received_before = upstream.inbound.received
                try:
                    upstream.writer.write(head + body if body else head)
                    await upstream.writer.drain()
                    status, headers, fields = await response_head(upstream.inbound)
                    break
                except (PeerClosed, Refusal, OSError, IndexError):
                    upstream.close()
                    # only a pooled connection that tritonserver closed before answering is safe to retry
                    if attempt == 1 and reused and upstream.inbound.received == received_before:
                        continue
                    return await self._answer(connection, request, 502, "upstream_failed", FAILED)
            self._count("forwarded")
            try:
                keep_alive = await self._relay(connection, request, upstream, status, headers, fields)
            except (PeerClosed, Refusal, OSError, ValueError):
                self._count("broken_mid_response")
                raise PeerClosed from None  # the response is half sent: only closing tells the client
            if answered is not None and status.split(b" ")[1] == b"200":
                answered()
            return keep_alive
        finally:
            if upstream is not None and upstream not in self._idle_upstreams:
                upstream.close()  # also when stop() cuts the request

    async def _answer(self, connection, request, status, reason, message, headers=b"") -> bool:
        self._count(reason)
        close = not request.keep_alive or self._draining
        connection.writer.write(error_response(status, message, close, headers))
        await connection.writer.drain()
        return not close

    async def _relay(self, connection: _Connection, request: Request, upstream: _Upstream, status: bytes,
                     headers: list[tuple[bytes, bytes]], fields: dict[bytes, bytes]) -> bool:
        """Relays tritonserver's response as it arrives; whether the client connection serves another."""
        code, source = int(status.split(b" ")[1]), upstream.inbound
        chunked = b"chunked" in connection_tokens(fields.get(b"transfer-encoding", b""))
        length = fields.get(b"content-length")
        bodiless = request.method == b"HEAD" or code in (204, 304)
        body_length = 0 if bodiless else None if chunked or length is None else int(length)
        until_close = body_length is None and not chunked
        reusable = not until_close and status.startswith(b"HTTP/1.1") and b"close" not in connection_tokens(
            fields.get(b"connection", b""))
        close = not request.keep_alive or self._draining or until_close or (chunked and request.http10)
        out = bytearray(status + b"\r\n" + forwarded_headers(headers, fields.get(b"connection", b"")))
        if length is not None and not chunked:
            out += b"Content-Length: " + length + b"\r\n"
        if chunked and not request.http10:
            out += b"Transfer-Encoding: chunked\r\n"
        out += b"Connection: close\r\n\r\n" if close else b"\r\n"
        await relay_body(source, connection.writer, out, body_length, chunked and not bodiless, request.http10)
        if reusable and len(self._idle_upstreams) < self.limits.upstream_idle_connections and not source.buf:
            self._idle_upstreams.append(upstream)
        return not close
