"""Which of Triton's APIs a caller reaches, and the launcher's key to the others.

Inference needs health, metadata, model-config and inference. Every other API is restricted on HTTP and
gRPC to requests carrying ADMIN_HEADER with a secret made for each start of tritonserver:
- shared-memory: a caller could register a stub's own /dev/shm region and read other requests' texts
  through it, or write into a stub's working memory;
- logging: a caller could turn the server's error log off; trace: write trace files, slow every request;
- statistics: per-model counts and timings of everyone's traffic;
- model-repository: load and unload models (the launcher's reviver uses it with the secret).
`open_apis` opens some of them to everyone (a client that passes tensors through system shared memory,
perf_analyzer's server-side statistics) for deployments where every caller is trusted.

The preprocess's `warm_up` input (zsc_server.warm_up) is checked the same way: a request carrying it must
carry the secret as the request parameter ADMIN_PARAMETER, which the model compares with ADMIN_KEY_ENV in
its environment (inherited from tritonserver; /proc/<pid>/environ is readable by the owner alone, unlike
the command line that holds the restriction flags). Standard library only: the launcher runs on the Triton
image's python3.
"""

from __future__ import annotations

import hmac
import json
import os

ADMIN_HEADER = "zsc-admin-key"
# Triton 2.51 looks for a restricted gRPC protocol's key under this prefix in the call's metadata
GRPC_ADMIN_METADATA = f"triton-grpc-protocol-{ADMIN_HEADER}"
ADMIN_PARAMETER = "zsc_admin_key"
ADMIN_KEY_ENV = "ZSC_ADMIN_KEY"
RESTRICTABLE = ("shared-memory", "logging", "trace", "statistics", "model-repository")


def restriction_flags(secret: str, open_apis: tuple[str, ...] = ()) -> tuple[str, ...]:
    """tritonserver flags restricting every RESTRICTABLE API but `open_apis` to `secret`'s holder."""
    unknown = sorted(set(open_apis) - set(RESTRICTABLE))
    if unknown:
        raise ValueError(f"unknown API {', '.join(unknown)}: choose among {', '.join(RESTRICTABLE)}")
    restricted = ",".join(api for api in RESTRICTABLE if api not in open_apis)
    if not restricted:
        return ()
    value = f"{restricted}:{ADMIN_HEADER}={secret}"
    return f"--http-restricted-api={value}", f"--grpc-restricted-protocol={value}"


def request_is_admin(parameters_json: str | None, environ: dict[str, str] | None = None) -> bool:
    """Whether a Python-backend request's parameters (`request.parameters()`, JSON) carry the secret that
    this server was started with; never true when the server has none."""
    secret = (os.environ if environ is None else environ).get(ADMIN_KEY_ENV, "")
    try:
        given = json.loads(parameters_json or "{}").get(ADMIN_PARAMETER, "")
    except (ValueError, AttributeError):
        return False
    return bool(secret) and isinstance(given, str) and hmac.compare_digest(given.encode(), secret.encode())
