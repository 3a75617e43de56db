"""The server a measurement runs against, in one place: its gRPC, HTTP and metrics URLs (given, or derived from
the gRPC address with Triton's default ports), the export facts its served config carries, and its local
tritonserver process. The benchmarks, perf and the soak take it from here."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request

from zsc_server.admin_api import ADMIN_HEADER, GRPC_ADMIN_METADATA

DEFAULT_HTTP_PORT, DEFAULT_METRICS_PORT = 8000, 8002
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclasses.dataclass(frozen=True)
class Target:
    grpc_url: str  # host:port
    http_url: str  # host:port
    metrics_url: str  # http://host:port/metrics
    admin_key: str = ""  # the server's secret: perf_analyzer reads the restricted statistics API with it

    @classmethod
    def from_urls(cls, grpc_url: str, http_url: str = "", metrics_url: str = "", admin_key: str = "") -> Target:
        """A running server at `grpc_url`; HTTP and metrics at Triton's default ports on its host unless given."""
        host = grpc_url.rsplit(":", 1)[0]
        http = (http_url or f"{host}:{DEFAULT_HTTP_PORT}").removeprefix("http://").rstrip("/")
        metrics = metrics_url or f"http://{http.rsplit(':', 1)[0]}:{DEFAULT_METRICS_PORT}/metrics"
        return cls(grpc_url, http, metrics, admin_key)

    @classmethod
    def of_server(cls, server) -> Target:
        """A zsc_server.triton_process.TritonServer this process started."""
        return cls(server.grpc_url, server.http_url, server.metrics_url, server.admin_secret)

    def url(self, protocol: str) -> str:
        return self.grpc_url if protocol == "grpc" else self.http_url

    def header_flags(self, protocol: str) -> list[str]:
        """perf_analyzer's -H flags that carry the admin secret, if any."""
        if not self.admin_key:
            return []
        return ["-H", f"{GRPC_ADMIN_METADATA if protocol == 'grpc' else ADMIN_HEADER}:{self.admin_key}"]

    def export_info(self) -> dict[str, str]:
        """The export facts the ensemble's config carries (empty for servers that are not ours)."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/models/zero_shot/config", timeout=5) as response:
                parameters = json.loads(response.read()).get("parameters", {})
        except (urllib.error.URLError, OSError, ValueError):
            return {}
        return {key.removeprefix("export_"): value["string_value"]
                for key, value in parameters.items() if key.startswith("export_")}

    def local_server_pid(self) -> int | None:
        """The pid of tritonserver behind `grpc_url` when it runs on this machine (for CPU and memory)."""
        from loadtest.server_cpu import find_tritonserver

        host, port = self.grpc_url.rsplit(":", 1)
        return find_tritonserver(int(port)) if host in LOCAL_HOSTS else None
