"""The Grafana dashboard and the HPA's prometheus-adapter rule query Triton metrics by name; a real
server's /metrics must expose every one of them (GPU metrics excepted: no GPU here)."""

from __future__ import annotations

import re
import urllib.request

from tests.unit.test_deploy import adapter_metric_names, dashboard_metric_names


def exposed_metrics(served) -> str:
    server = served.server
    # one request so that every per-model counter has been created
    served.client().classify("一条测试文本", ["咨询", "投诉"])
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_dashboard_and_autoscaler_metrics_exist(structbert):
    text = exposed_metrics(structbert)
    names = set(re.findall(r"^(nv_[a-z_]+)\{", text, re.M))
    wanted = {name for name in dashboard_metric_names() | adapter_metric_names() if not name.startswith("nv_gpu_")}
    assert wanted, "no metric names found in the dashboard"
    assert wanted <= names, f"not exposed by tritonserver: {sorted(wanted - names)}"
    # the adapter's rule selects the encoder's series
    assert re.search(r'^nv_inference_queue_duration_us\{model="encoder"', text, re.M)
