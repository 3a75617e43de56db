"""`make serve`'s launcher as the exposure tests drive it: its process, ports and output, raw HTTP to its public
port, and tritonserver's own port and secret behind it, as a local user with the launcher's uid finds them."""

from __future__ import annotations

import contextlib
import http.client
import itertools
import socket

import numpy as np
import psutil
import tritonclient.grpc as grpcclient

from tests.conftest import Printed, haproxy_children, launcher_server
from zsc_client import ZeroShotClient, ZeroShotClientError

GOOD = dict(text="我的快递三天了还没到，请帮我查一下", candidate_labels=["咨询", "投诉", "建议"])
NUMBERS = itertools.count()


class Launcher:
    """A running launcher: its process, ports and everything it printed (tritonserver's log included)."""

    def __init__(self, process, http_port: int, grpc_port: int) -> None:
        self.process, self.http_port, self.grpc_port = process, http_port, grpc_port
        self.http_url, self.grpc_url = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
        self.printed = Printed(process)

    def server_pid(self) -> int:
        return launcher_server(self.process.pid)

    def behind_edge(self) -> bool:
        """Whether the launcher runs its edge proxy (haproxy, where installed) on the public ports."""
        return bool(haproxy_children(self.process.pid))

    def rss(self) -> int:
        """Resident memory of the launcher, tritonserver and the stubs together."""
        total = 0
        launcher = psutil.Process(self.process.pid)
        for process in [launcher, *launcher.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += process.memory_info().rss
        return total


def answers(launcher: Launcher, protocol: str = "grpc", timeout_s: float = 5.0) -> bool:
    """A correct answer to a request never sent before (the response cache cannot answer it)."""
    url = launcher.grpc_url if protocol == "grpc" else launcher.http_url
    try:
        with ZeroShotClient(url, protocol, timeout_s=timeout_s) as client:
            result = client.classify(f"{next(NUMBERS)}: {GOOD['text']}", GOOD["candidate_labels"])
            return sorted(result.labels) == sorted(GOOD["candidate_labels"])
    except ZeroShotClientError:
        return False


def raw_http(launcher: Launcher, request: bytes, chunks: list[bytes] = ()) -> tuple[int, bytes]:
    """Send a raw request (and then `chunks`) to the launcher's HTTP port: the status and body it answered."""
    with socket.create_connection(("127.0.0.1", launcher.http_port), timeout=30) as connection:
        try:
            connection.sendall(request)
            for chunk in chunks:
                connection.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the whole body was sent
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, response.read()


def infer_head(length: int | None, *extra: str) -> bytes:
    headers = ["POST /v2/models/zero_shot/infer HTTP/1.1", "Host: localhost", "Content-Type: application/json",
               *([f"Content-Length: {length}"] if length is not None else ["Transfer-Encoding: chunked"]), *extra]
    return ("\r\n".join(headers) + "\r\n\r\n").encode()


def private_url(launcher: Launcher, protocol: str) -> str:
    """tritonserver's own port behind the fronts (loopback), as a local user with the launcher's uid finds it
    on its command line: where the launcher, the benchmarks and anyone on the host reach the ensemble's steps."""
    [flag] = [arg for arg in psutil.Process(launcher.server_pid()).cmdline() if arg.startswith(f"--{protocol}-port=")]
    return f"127.0.0.1:{flag.split('=', 1)[1]}"


def secret(launcher: Launcher) -> str:
    """The launcher's secret, as a local user with the launcher's own uid can read it (tritonserver's
    command line)."""
    [flag] = [arg for arg in psutil.Process(launcher.server_pid()).cmdline() if arg.startswith("--grpc-restricted")]
    return flag.rsplit("=", 1)[1]


def encoder_inputs(ids: int, module=grpcclient) -> list:
    inputs = []
    for name, value in (("input_ids", ids), ("attention_mask", 1), ("token_type_ids", 0)):
        tensor = module.InferInput(name, [1, 8], "INT64")
        tensor.set_data_from_numpy(np.full((1, 8), value, dtype=np.int64))
        inputs.append(tensor)
    return inputs
