"""The gRPC front: a byte-level gRPC proxy on the public gRPC port, in front of tritonserver's own gRPC endpoint
on a private loopback port, that bounds every request message before tritonserver sees it.

Why: tritonserver 2.51 accepts gRPC messages up to 2 GiB and inflates gzip-compressed ones without bound, with
no flag to change either; measured against it, a 100 MB TEXT that the model refuses still left +355 MB RSS (the
copy into the Python stub's shared memory, which never shrinks), and a 500 MB TEXT sent gzip-compressed (0.5 MB
on the wire) left +1.9 GB. Here grpcio's own receive limit refuses a message over max_message_bytes with
RESOURCE_EXHAUSTED, and it applies to the decompressed size of a compressed message, checked while inflating
(measured: three 0.5 MB requests inflating to 500 MB each were refused; the front's peak RSS grew by 3.3 MiB).

Nothing is deserialized: one generic handler takes every unary method of inference.GRPCInferenceService as raw
bytes and forwards it over one channel to tritonserver, with the caller's metadata, deadline and cancellation;
tritonserver's answer, status, details and metadata come back unchanged. A ModelInfer request is only walked on the
wire for its model and the outputs it names (zsc_server.inference_request: a model other than the ensemble is
PERMISSION_DENIED, what would crash tritonserver or poison its response cache INVALID_ARGUMENT). ModelStreamInfer
(for decoupled models: it would carry requests past admission control, and idle streams would hold the RPC slots)
and other services are UNIMPLEMENTED here. Messages go upstream uncompressed, so tritonserver never inflates
anything. When tritonserver cannot be reached (it is restarting) the caller gets UNAVAILABLE.

One asyncio event loop in one daemon thread, like zsc_server.http_front, whose API this mirrors. It logs
nothing per request: `counters` says what it forwarded and refused, by reason. What it costs is mostly
grpcio's own per-RPC work in Python, about 0.4 ms of CPU per RPC (measured; a bare grpc.aio or sync-grpc
forwarder costs the same). The receive bound on decompressed messages is grpcio's (measured on 1.85.4).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools

import grpc

from zsc_server.front_thread import RESTARTING, FrontThread, StopReport
from zsc_server.inference_request import protobuf_problem

SERVICE = "/inference.GRPCInferenceService/"
STREAM_METHOD = SERVICE + "ModelStreamInfer"
INFER_METHOD = SERVICE + "ModelInfer"
# Metadata that gRPC writes itself on each hop: the front's own goes upstream, not the caller's
HOP_METADATA = ("user-agent", "te", "content-type")
UPSTREAM_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # gRPC's reconnect backoff grows to 120 s, and meanwhile every call fails at once: tritonserver back on
    # the same port went unused for 7.5 s after a 20 s outage (measured), longer after longer ones.
    # Reconnecting over loopback is cheap.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
CHANNEL_CLOSE_GRACE_S = 5.0  # how long calls still on a replaced upstream channel may go on before it closes


@dataclasses.dataclass(frozen=True)
class GrpcLimits:
    # The largest legitimate request, a 64 KiB text + 64 KiB of labels + a 1 KiB template as a KServe v2
    # protobuf, is about 130 KiB; the bound applies after decompression
    max_message_bytes: int = 1 << 20
    # RPCs served at once, each holding up to max_message_bytes; beyond it grpc answers RESOURCE_EXHAUSTED
    max_concurrent_rpcs: int = 1024


def forwarded_metadata(metadata) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's own metadata (e.g. zsc-admin-key), without the keys that gRPC writes on every hop."""
    return tuple(
        (key, value) for key, value in metadata or ()
        if not key.startswith((":", "grpc-")) and key not in HOP_METADATA
    )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcFront(FrontThread):
    """The front on listen_host:listen_port, forwarding to upstream_host:upstream_port (see the module).
    upstream_port may be changed while it runs: the next RPC goes to the new port."""

    thread_name = "grpc-front"

    def __init__(self, listen_host: str, listen_port: int, upstream_host: str, upstream_port: int,
                 limits: GrpcLimits = GrpcLimits()):  # noqa: B008 (frozen, so one shared default is fine)
        super().__init__()
        self.listen_host, self.listen_port = listen_host, listen_port
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.limits = limits
        self.port = listen_port  # the bound port once started (listen_port 0 picks a free one)
        self._active: set[asyncio.Task] = set()  # the handlers of the RPCs being forwarded
        self._channel: grpc.aio.Channel | None = None
        self._channel_port: int | None = None
        self._closing: set[asyncio.Task] = set()  # replaced channels, closing once their calls end
        self._server: grpc.aio.Server | None = None

    @property
    def counters(self) -> dict[str, int]:
        """{"forwarded": n, <refusal reason>: n, ...}, safe to read from any thread. grpc refuses some RPCs
        before the front sees their request, so those are counted together as "not_received": a message over
        max_message_bytes, RPCs beyond max_concurrent_rpcs (both RESOURCE_EXHAUSTED), a caller cancelling
        while still sending, and for a moment the RPCs whose message is still arriving."""
        counts = self._counts_now()
        started, received = counts.pop("started", 0), counts.pop("received", 0)
        if started > received:
            counts["not_received"] = started - received
        return counts

    def start(self) -> GrpcFront:
        """Binds now (OSError naming the address when that fails), then serves in a daemon thread."""
        self._serve_in_thread(self._open)
        return self

    async def _open(self) -> grpc.aio.Server:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.limits.max_message_bytes),
                ("grpc.max_send_message_length", -1),  # answers are tritonserver's
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ],
            maximum_concurrent_rpcs=self.limits.max_concurrent_rpcs,
        )
        server.add_generic_rpc_handlers((_Handler(self),))
        address = _address(self.listen_host, self.listen_port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:  # newer grpcio raises where older returned 0
            port = 0
        if not port:
            await server.stop(None)
            raise OSError(f"the gRPC front cannot listen on {address}: the port is in use, or the address is "
                          "not one of this host's")
        self.port = port
        await server.start()
        return server

    async def _shutdown(self, drain_timeout_s: float) -> StopReport:
        busy = set(self._active)
        stopping = asyncio.ensure_future(self._server.stop(drain_timeout_s))
        cut: set[asyncio.Task] = set()
        if busy:
            _, cut = await asyncio.wait(busy, timeout=drain_timeout_s)
        await stopping
        if self._channel is not None:
            await self._channel.close()
        await asyncio.gather(*self._closing, return_exceptions=True)
        return StopReport(in_flight=len(busy), cut=len(cut))

    def _upstream(self) -> grpc.aio.Channel:
        """The channel to tritonserver's current port; a new one when upstream_port has changed."""
        port = self.upstream_port
        if port != self._channel_port:
            if self._channel is not None:
                closing = asyncio.ensure_future(self._channel.close(CHANNEL_CLOSE_GRACE_S))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            self._channel = grpc.aio.insecure_channel(_address(self.upstream_host, port), options=UPSTREAM_OPTIONS)
            self._channel_port = port
        return self._channel

    async def forward_unary(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if method != INFER_METHOD:
            return await self._forward_unary(method, request, context)
        problem = protobuf_problem(request)
        if problem:  # what tritonserver must not read (zsc_server.inference_request)
            self._count("received")
            self._count(problem.reason)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED if problem.status == 403 else
                                grpc.StatusCode.INVALID_ARGUMENT, problem.message)
        with self.admission.forwarding() as reason:
            if reason:  # refused here, it costs tritonserver nothing
                self._count("received")
                self._count("busy")
                await context.abort(grpc.StatusCode.UNAVAILABLE, reason)
            response = await self._forward_unary(method, request, context)  # an error status raises
            self.admission.answered()
            return response

    async def _forward_unary(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        channel, call = self._call(lambda upstream: upstream.unary_unary(method), request, context)
        with self._in_flight(call):
            try:
                response = await call
            except grpc.aio.AioRpcError as error:
                await self._answer_failure(channel, error, context)
        self._count("forwarded")
        await self._pass_metadata(call, context)
        return response

    def _call(self, multi_callable, payload, context: grpc.aio.ServicerContext):
        """(channel, call): the caller's RPC started upstream with its metadata and deadline."""
        self._count("received")
        channel = self._upstream()
        call = multi_callable(channel)(payload, metadata=forwarded_metadata(context.invocation_metadata()),
                                       timeout=context.time_remaining())
        return channel, call

    @contextlib.contextmanager
    def _in_flight(self, call):
        """This handler is in flight (stop() drains it) while `call` runs; then the call is cancelled: when the
        caller cancelled, or the drain bound cut it (a no-op once the call is done)."""
        task = asyncio.current_task()
        self._active.add(task)
        try:
            yield
        finally:
            self._active.discard(task)
            call.cancel()

    async def _pass_metadata(self, call: grpc.aio.UnaryUnaryCall, context: grpc.aio.ServicerContext) -> None:
        initial, trailing = await call.initial_metadata(), await call.trailing_metadata()
        if initial:
            await context.send_initial_metadata(forwarded_metadata(initial))
        if trailing:
            context.set_trailing_metadata(forwarded_metadata(trailing))

    async def _answer_failure(self, channel: grpc.aio.Channel, error: grpc.aio.AioRpcError,
                              context: grpc.aio.ServicerContext) -> None:
        """Passes tritonserver's error status back as it is; UNAVAILABLE with RESTARTING when it is not there.
        An UNAVAILABLE that tritonserver itself answered (a model not ready, a full queue) leaves the channel
        READY; one from the transport (refused, reset, closed) does not."""
        if error.code() == grpc.StatusCode.UNAVAILABLE and channel.get_state() != grpc.ChannelConnectivity.READY:
            self._count("upstream_down")
            await context.abort(grpc.StatusCode.UNAVAILABLE, RESTARTING)
        self._count("forwarded")
        await context.abort(error.code(), error.details() or "",
                            forwarded_metadata(error.trailing_metadata()))


class _Handler(grpc.GenericRpcHandler):
    """Picks the forwarding coroutine for each RPC by its method name."""

    def __init__(self, front: GrpcFront):
        self.front = front

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if not method.startswith(SERVICE):
            self.front._count("unimplemented")
            return None  # grpc answers UNIMPLEMENTED
        if method == STREAM_METHOD:  # for decoupled models; it would skip admission, and idle streams hold slots
            self.front._count("unimplemented")
            return None
        self.front._count("started")
        return grpc.unary_unary_rpc_method_handler(functools.partial(self.front.forward_unary, method))
