"""Client for the zero-shot classification ensemble served by NVIDIA Triton.

    from zsc_client import ZeroShotClient
    with ZeroShotClient("localhost:8001") as client:
        result = client.classify("我的快递还没到", ["咨询", "投诉", "建议"])
        print(result.labels, result.scores)
"""

from zsc_client.aio import AsyncZeroShotClient
from zsc_client.client import ZeroShotClient
from zsc_client.errors import InvalidInputError, ServerUnavailableError, ZeroShotClientError
from zsc_client.request import DEFAULT_MODEL, ClassificationResult

__all__ = [
    "AsyncZeroShotClient",
    "ClassificationResult",
    "DEFAULT_MODEL",
    "InvalidInputError",
    "ServerUnavailableError",
    "ZeroShotClient",
    "ZeroShotClientError",
]
