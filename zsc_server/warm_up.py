"""The launcher's warm-up of the label cache (`--warm-labels FILE`): every preprocess instance encodes the
file's label sets before the launcher reports ready, and again after the launcher reloads the model.

Each preprocess instance is a process with its own cache, and Triton offers no way to address one
instance. So the launcher sends the file to the `preprocess` model (input `warm_up`) as many times at once
as there are instances, and each answer names the instance that encoded it (`warm_up_report`): while one
instance is busy encoding, Triton gives the next request to an idle one. Rounds repeat until every
instance has answered; an instance that already holds the sets answers at once from its cache.

Why not Triton's own model warm-up, which runs on every instance before the model is ready: it runs
before the server accepts inference, and a BLS call to the encoder is refused then ("Server not ready",
tritonserver 2.51), so the labels could not be encoded.

Standard library only (the launcher runs on the Triton image's python3): KServe v2 JSON over HTTP.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from zsc_server import tensor_names as names
from zsc_server.admin_api import ADMIN_PARAMETER

PREPROCESS = "preprocess"


class WarmUpError(RuntimeError):
    """The preprocess instances could not all be warmed; `status`: the HTTP status that said so, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class WarmUpResult:
    instances: list[str]  # every preprocess instance
    reports: dict[str, dict]  # instance -> its report (label sets, hypotheses, encoded, entries, errors)
    seconds: float

    @property
    def errors(self) -> list[str]:
        """Label sets refused as requests would be (each instance checks them alike: one list)."""
        return next(iter(self.reports.values()))["errors"] if self.reports else []

    def summary(self) -> str:
        first = next(iter(self.reports.values()))
        encoded = sum(report["encoded"] for report in self.reports.values())
        return (f"label cache warmed in {self.seconds:.1f} s: {first['label_sets']} label sets, "
                f"{first['hypotheses']} hypotheses, in each of {', '.join(sorted(self.reports))} "
                f"({encoded} encoded)")


def cache_instances(http_url: str, timeout_s: float = 30.0) -> list[str]:
    """The names of the preprocess instances that hold a label cache ([] when the export has none:
    NLI mode, or --label-cache-mb 0)."""
    config = _request(f"{_base(http_url)}/v2/models/{PREPROCESS}/config", None, timeout_s)
    parameters = {key: value.get("string_value", "") for key, value in (config.get("parameters") or {}).items()}
    if parameters.get("mode") != "embedding" or parameters.get("label_cache_budget_bytes", "0") == "0":
        return []
    # Triton names a CPU instance <group>_<index>
    return [f"{group['name']}_{index}" for group in config.get("instance_group", [])
            for index in range(int(group.get("count", 1)))]


def warm_label_cache(http_url: str, warm_labels: str, admin_secret: str,
                     timeout_s: float = 120.0) -> WarmUpResult | None:
    """Send the warm-labels file content to every preprocess instance; None when there is no label cache.
    `admin_secret`: the server's (the preprocess takes `warm_up` from its holder only, zsc_server.admin_api).
    Raises WarmUpError when some instance has not answered by `timeout_s` (the last error is in it)."""
    started = time.monotonic()
    instances = cache_instances(http_url)
    if not instances:
        return None
    body = json.dumps({"inputs": [{"name": names.WARM_UP, "shape": [1], "datatype": "BYTES", "data": [warm_labels]}],
                       "outputs": [{"name": names.WARM_UP_REPORT}],
                       "parameters": {ADMIN_PARAMETER: admin_secret}}).encode()
    url = f"{_base(http_url)}/v2/models/{PREPROCESS}/infer"
    reports: dict[str, dict] = {}
    last_error = None
    with ThreadPoolExecutor(len(instances)) as pool:
        while set(instances) - set(reports):
            left = timeout_s - (time.monotonic() - started)
            if left <= 0:
                missing = sorted(set(instances) - set(reports))
                raise WarmUpError(f"preprocess instances {', '.join(missing)} not warmed after {timeout_s:.0f} s"
                                  + (f"; last error: {last_error}" if last_error else ""))
            for answer in pool.map(_warm_one, [url] * len(instances), [body] * len(instances),
                                   [left] * len(instances)):
                if isinstance(answer, dict):
                    reports[answer["instance"]] = answer
                else:
                    last_error = answer
            if last_error and set(instances) - set(reports):
                time.sleep(0.2)
    return WarmUpResult(instances, reports, time.monotonic() - started)


def _warm_one(url: str, body: bytes, timeout_s: float) -> dict | str:
    """One instance's report, or the error that stopped it when trying again may help (a server error: the
    encoder busy or being reloaded). Raises WarmUpError when it cannot: a refused request (HTTP 400: no
    label cache, a file the model cannot read) or no server to answer (stopped, or stopping)."""
    try:
        response = _request(url, body, timeout_s)
    except WarmUpError as exc:
        if exc.status is None or exc.status < 500:
            raise
        return str(exc)
    [output] = [o for o in response.get("outputs", []) if o.get("name") == names.WARM_UP_REPORT]
    return json.loads(output["data"][0])


def _request(url: str, body: bytes | None, timeout_s: float) -> dict:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"},
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=max(1.0, timeout_s)) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise WarmUpError(f"HTTP {exc.code}: {detail}", exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WarmUpError(str(exc)) from None


def _base(http_url: str) -> str:
    return http_url if "://" in http_url else f"http://{http_url}"
