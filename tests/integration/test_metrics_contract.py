"""The Grafana dashboard and the HPA's prometheus-adapter rule query metrics by name; a real server's
/metrics must expose every one of them (GPU metrics excepted: no GPU here). Triton's own (nv_*) on the NLI
server; the label cache's (zsc_*, Python-backend custom metrics) on the embedding server, where the cache is."""

from __future__ import annotations

import re
import urllib.request

from tests.deploy_files import adapter_metric_names, dashboard_metric_names


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
    wanted = {name for name in dashboard_metric_names() | adapter_metric_names() if name.startswith("nv_")
              and not name.startswith("nv_gpu_")}
    assert wanted, "no metric names found in the dashboard"
    assert wanted <= names, f"not exposed by tritonserver: {sorted(wanted - names)}"
    # the adapter's rule selects the encoder's series
    assert re.search(r'^nv_inference_queue_duration_us\{model="encoder"', text, re.M)


def test_the_dashboards_label_cache_metrics_exist(embedding):
    text = exposed_metrics(embedding)
    wanted = {name for name in dashboard_metric_names() if name.startswith("zsc_")}
    assert {"zsc_label_cache_hits", "zsc_label_cache_misses", "zsc_label_cache_evictions",
            "zsc_label_cache_bytes"} <= wanted
    names = set(re.findall(r"^(zsc_[a-z_]+)\{", text, re.M))
    assert wanted <= names, f"not exposed by tritonserver: {sorted(wanted - names)}"
    # one series per preprocess instance: each is a process with its own cache
    instances = set(re.findall(r'^zsc_label_cache_hits\{instance="([^"]+)",model="preprocess"\}', text, re.M))
    assert instances == {"preprocess_0_0", "preprocess_0_1"}
