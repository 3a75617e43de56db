"""The WebUI's aiohttp app: the page (static files) and the JSON API it uses.

One ``AsyncZeroShotClient`` serves every request, so requests from several browsers are in flight to
Triton together (and its dynamic batcher can merge them) instead of queueing behind each other."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
from pathlib import Path

from aiohttp import web

from zsc_client.aio import AsyncZeroShotClient
from zsc_client.errors import InvalidInputError, ServerUnavailableError, ZeroShotClientError
from zsc_client.request import DEFAULT_MODEL, split_url
from zsc_client.webui import hf_api
from zsc_client.webui.validation import (
    ClassifyRequest,
    RequestError,
    classify_response,
    clean_server_message,
    field_of_server_message,
    parse_classify_request,
)

STATIC = Path(__file__).resolve().parent / "static"
# Triton refuses texts over 64 KiB by default; a body of 1 MiB holds that even with every character
# \u-escaped, plus labels. Bigger bodies are refused before they are read.
MAX_BODY_BYTES = 1024 * 1024
HEALTH_TIMEOUT_S = 5.0
# The page loads nothing but its own files: a CDN reference would fail here rather than only offline.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

_dumps = functools.partial(json.dumps, ensure_ascii=False)
log = logging.getLogger("zsc_client.webui")


@dataclasses.dataclass(frozen=True)
class Settings:
    triton_url: str  # as given (a scheme such as https:// is kept for the client)
    address: str  # host:port, for messages
    protocol: str
    model_name: str
    timeout_s: float
    max_body_bytes: int


@dataclasses.dataclass
class State:
    client: AsyncZeroShotClient | None = None


SETTINGS = web.AppKey("settings", Settings)
STATE = web.AppKey("state", State)


def create_app(
    triton_url: str, protocol: str = "grpc", model_name: str = DEFAULT_MODEL, timeout_s: float = 30.0,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> web.Application:
    """The app for ``web.run_app`` or aiohttp's test server; connects to Triton on startup, lazily
    (Triton may start after the WebUI: the page reports it as unreachable until it answers)."""
    address, _ = split_url(triton_url, protocol)  # a bad protocol fails here, not on the first request
    app = web.Application(client_max_size=max_body_bytes, middlewares=[_api_errors_and_headers])
    app[SETTINGS] = Settings(triton_url, address, protocol, model_name, timeout_s, max_body_bytes)
    app[STATE] = State()
    app.cleanup_ctx.append(_triton_client)
    app.router.add_get("/", _index)
    app.router.add_post("/api/classify", _classify)
    app.router.add_post(hf_api.PATH, _classify_hf)
    app.router.add_get("/api/health", _health)
    app.router.add_static("/static", STATIC)
    return app


async def _triton_client(app: web.Application):
    settings = app[SETTINGS]
    # made inside the running loop: a grpc.aio channel belongs to the loop it was created on
    client = AsyncZeroShotClient(settings.triton_url, settings.protocol, settings.model_name,
                                 timeout_s=settings.timeout_s)
    app[STATE].client = client
    yield
    await client.close()


def _json_error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status, dumps=_dumps)


@web.middleware
async def _api_errors_and_headers(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if request.path.startswith("/api/"):  # the page and API callers read JSON errors; aiohttp's are text
            response = _json_error(exc.status, f"{exc.reason}: {request.method} {request.path}")
        else:  # as aiohttp made it, with this app's headers below
            response = web.Response(status=exc.status, text=exc.text, headers=exc.headers)
    except Exception:  # a defect here: the caller still gets JSON, the log the traceback
        log.exception("%s %s failed", request.method, request.path)
        if not request.path.startswith("/api/"):
            raise
        response = _json_error(500, "the WebUI server failed on this request (its log says why)")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _read_json(request: web.Request, limit: int) -> object:
    # a form or text/plain POST is what another site's page can send here without asking (no CORS preflight)
    if request.content_type != "application/json":
        raise RequestError(f"send the body as Content-Type: application/json, not {request.content_type}",
                           status=415)
    too_big = f"the request body is larger than the limit of {limit} bytes"
    if request.content_length is not None and request.content_length > limit:
        raise RequestError(f"{too_big} ({request.content_length} bytes)", status=413)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # no Content-Length (chunked): aiohttp stops at client_max_size
        raise RequestError(too_big, status=413) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RequestError(f"the body is not UTF-8: {exc}") from None
    except json.JSONDecodeError as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise RequestError(f"the body holds a value JSON cannot give here: {exc}") from None
    except RecursionError:
        raise RequestError("the body nests arrays or objects too deeply") from None


async def _classify(request: web.Request) -> web.Response:
    try:
        body = parse_classify_request(await _read_json(request, request.app[SETTINGS].max_body_bytes))
        result = await _ask_triton(request.app, body)
    except RequestError as exc:
        return _json_error(exc.status, exc.message, exc.field)
    return web.json_response(classify_response(body, result), dumps=_dumps)


async def _classify_hf(request: web.Request) -> web.Response:
    """The Hugging Face inference API's zero-shot-classification task (zsc_client.webui.hf_api)."""
    try:
        body = hf_api.parse_hf_request(await _read_json(request, request.app[SETTINGS].max_body_bytes))
        result = await _ask_triton(request.app, body)
    except RequestError as exc:
        return web.json_response({"error": hf_api.hf_error(exc).message}, status=exc.status, dumps=_dumps)
    return web.json_response(hf_api.hf_response(result), dumps=_dumps)


async def _ask_triton(app: web.Application, body: ClassifyRequest):
    """Triton's answer, or RequestError with the status and message the caller should get."""
    settings = app[SETTINGS]
    try:
        return await app[STATE].client.classify(body.text, body.labels, body.hypothesis_template, body.multi_label)
    except InvalidInputError as exc:
        raise RequestError(clean_server_message(exc.message), field_of_server_message(exc.message)) from None
    except ServerUnavailableError as exc:
        raise RequestError(f"Triton is not reachable at {settings.address} ({settings.protocol}): {exc.message}. "
                           f"Is the server running and the {settings.model_name} model ready?", status=503) from None
    except ZeroShotClientError as exc:
        log.warning("Triton failed a request: %s", exc.message)
        raise RequestError(f"Triton could not answer: {exc.message}", status=502) from None


async def _health(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        # a black-holed address would otherwise keep the probe (and the page's status line) waiting
        ready = await asyncio.wait_for(request.app[STATE].client.is_ready(), HEALTH_TIMEOUT_S)
    except asyncio.TimeoutError:
        ready = False
    body = {"ready": ready, "triton": settings.address, "protocol": settings.protocol,
            "model": settings.model_name}
    return web.json_response(body, status=200 if ready else 503, dumps=_dumps)


def serve(triton_url: str, protocol: str = "grpc", model_name: str = DEFAULT_MODEL, host: str = "127.0.0.1",
          port: int = 7860, timeout_s: float = 30.0) -> None:
    """Run the WebUI in the foreground until Ctrl-C; raises OSError if it cannot listen."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(triton_url, protocol, model_name, timeout_s)
    settings = app[SETTINGS]
    shown_host = f"[{host}]" if ":" in host else host
    ready_line = (f"zsc webui: http://{shown_host}:{port}/ -> Triton {settings.address} "
                  f"({settings.protocol}, model {settings.model_name}); Ctrl-C stops it")
    web.run_app(app, host=host, port=port, print=lambda _: print(ready_line, flush=True))
