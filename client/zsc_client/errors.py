"""Client errors: everything the client raises is a ZeroShotClientError."""

from __future__ import annotations

import asyncio

from tritonclient.utils import InferenceServerException

_INVALID = {"StatusCode.INVALID_ARGUMENT", "400"}
# gRPC CANCELLED from the server: a stopping tritonserver cancels the calls it still holds (a cancel on this
# side raises asyncio.CancelledError instead)
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED", "503", "429"}
# what Triton says, with other status codes, while it restarts or a model is down: worth a retry later
_RESTARTING = ("connection closed", "has no available versions", "is not healthy")


class ZeroShotClientError(Exception):
    """A request failed; ``message`` is the server's own words, ``status`` its status code if any."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class InvalidInputError(ZeroShotClientError):
    """The server refused the input (empty text, no labels, template without {}, limits ...)."""


class ServerUnavailableError(ZeroShotClientError):
    """The server could not be reached, is not ready, or is overloaded."""


# what a transport says when nothing, or another protocol's server, answers at the address: no server
# ("connection refused", "failed to connect"), gRPC sent to an HTTP port ("Socket closed"), HTTP sent to a
# gRPC port (geventhttpclient's HTTPParseError, aiohttp's "Server disconnected")
_NO_SERVER = ("failed to connect", "connection refused", "socket closed", "httpparseerror", "cannot reach",
              "name or service not known", "connection reset", "server disconnected")


def connection_hint(url: str, protocol: str) -> str:
    """Where a client expected which server: appended to a connection error."""
    other = "http" if protocol == "grpc" else "grpc"
    return (f" (is a {protocol} server listening at {url}? `make serve` serves gRPC on port 8001 and HTTP on "
            f"8000; --protocol {other} for the other)")


def translate(exc: BaseException, url: str | None = None, protocol: str | None = None) -> ZeroShotClientError:
    """Map tritonclient / transport exceptions to this package's types; with `url` and `protocol`, a failure
    to reach a server says which server was expected where."""
    error = _translate(exc)
    if url and protocol and any(marker in error.message.lower() for marker in _NO_SERVER):
        return ServerUnavailableError(error.message + connection_hint(url, protocol), error.status)
    return error


def _translate(exc: BaseException) -> ZeroShotClientError:
    if isinstance(exc, ZeroShotClientError):
        return exc
    if isinstance(exc, InferenceServerException):
        status = exc.status()
        message = exc.message() or str(exc)
        if any(marker in message.lower() for marker in _RESTARTING):
            return ServerUnavailableError(message, status)
        if status in _INVALID:
            return InvalidInputError(message, status)
        if status in _UNAVAILABLE or "connect" in message.lower():
            return ServerUnavailableError(message, status)
        return ZeroShotClientError(message, status)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):  # an HTTP client's (one class since Python 3.11)
        return ServerUnavailableError("Deadline Exceeded: no answer within the client timeout")
    if isinstance(exc, OSError):
        return ServerUnavailableError(f"cannot reach the server: {exc}")
    if any(cls.__name__ == "ClientConnectionError" for cls in type(exc).__mro__):
        # aiohttp's (the asyncio HTTP client's) lost connections, e.g. ServerDisconnectedError: HTTP sent to the
        # gRPC port, or a server going down; matched by name so that the sync client needs no aiohttp
        return ServerUnavailableError(f"{type(exc).__name__}: {exc}")
    message = f"{type(exc).__name__}: {exc}"
    if any(marker in message.lower() for marker in _RESTARTING):  # e.g. HTTPConnectionClosed
        return ServerUnavailableError(message)
    return ZeroShotClientError(message)
