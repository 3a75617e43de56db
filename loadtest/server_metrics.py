"""What the server did during a measurement, from Triton's Prometheus counters: before/after deltas per model
(requests, queue and compute time, batch sizes, response-cache hits), the label cache, Triton's GPU gauges."""

from __future__ import annotations

import re
import urllib.request

# name{label="value",...} value
_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
COUNTERS = {
    "requests": "nv_inference_request_success",
    "failures": "nv_inference_request_failure",
    "executions": "nv_inference_exec_count",
    "inferences": "nv_inference_count",
    "queue_us": "nv_inference_queue_duration_us",
    "compute_input_us": "nv_inference_compute_input_duration_us",
    "compute_infer_us": "nv_inference_compute_infer_duration_us",
    "compute_output_us": "nv_inference_compute_output_duration_us",
    "request_us": "nv_inference_request_duration_us",
    "cache_hits": "nv_cache_num_hits_per_model",  # answered from the response cache, no compute
    "cache_misses": "nv_cache_num_misses_per_model",  # looked up in the cache, not found: computed
    # embedding mode's label cache (preprocess instances' custom metrics): hypotheses found / encoded / dropped
    "label_cache_hits": "zsc_label_cache_hits",
    "label_cache_misses": "zsc_label_cache_misses",
    "label_cache_evictions": "zsc_label_cache_evictions",
}
LABEL_CACHE_GAUGES = {"bytes": "zsc_label_cache_bytes", "entries": "zsc_label_cache_entries",
                      "budget_bytes": "zsc_label_cache_budget_bytes"}


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and not line.startswith("#"):
            labels = dict(_LABEL.findall(match.group("labels") or ""))
            samples.append((match.group("name"), labels, float(match.group("value"))))
    return samples


def scrape(url: str, timeout_s: float = 5.0) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse_prometheus(response.read().decode("utf-8"))


def per_model(samples) -> dict[str, dict[str, float]]:
    models: dict[str, dict[str, float]] = {}
    names = {metric: key for key, metric in COUNTERS.items()}
    for name, labels, value in samples:
        if name in names and "model" in labels:
            entry = models.setdefault(labels["model"], dict.fromkeys(COUNTERS, 0.0))
            entry[names[name]] += value
    return models


def model_deltas(before, after) -> dict[str, dict[str, float]]:
    """Per model: counter increases during the run, plus average queue / compute ms per request and
    the average batch the dynamic batcher formed (inferences per execution)."""
    start, end = per_model(before), per_model(after)
    deltas = {}
    for model, counters in end.items():
        delta = {key: counters[key] - start.get(model, {}).get(key, 0.0) for key in COUNTERS}
        requests = delta["requests"] or float("nan")
        delta["avg_queue_ms"] = delta["queue_us"] / requests / 1e3
        delta["avg_compute_ms"] = (delta["compute_input_us"] + delta["compute_infer_us"]
                                   + delta["compute_output_us"]) / requests / 1e3
        delta["avg_batch"] = delta["inferences"] / (delta["executions"] or float("nan"))
        deltas[model] = delta
    return deltas


def label_cache_summary(deltas: dict[str, dict[str, float]], after) -> dict | None:
    """The label cache over a run (None where the served export has none): hits, misses and evictions during
    it (all preprocess instances), the share of hypotheses answered from the cache, and what it held at the
    end."""
    gauges = dict.fromkeys(LABEL_CACHE_GAUGES, 0.0)
    names = {name: key for key, name in LABEL_CACHE_GAUGES.items()}
    for name, _labels, value in after:
        if name in names:
            gauges[names[name]] += value
    if not gauges["budget_bytes"]:
        return None
    preprocess = deltas.get("preprocess", {})
    hits, misses = preprocess.get("label_cache_hits", 0.0), preprocess.get("label_cache_misses", 0.0)
    return {"hits": hits, "misses": misses, "evictions": preprocess.get("label_cache_evictions", 0.0),
            "hit_share": hits / (hits + misses) if hits + misses else float("nan")} | gauges


def gpu_gauges(samples) -> dict[str, float]:
    """Triton's own GPU gauges (present when it runs with a GPU and --allow-gpu-metrics)."""
    gauges = {}
    for name, _labels, value in samples:
        if name == "nv_gpu_memory_used_bytes":
            gauges["memory_used_mb"] = gauges.get("memory_used_mb", 0.0) + value / 2**20
        elif name == "nv_gpu_utilization":
            gauges["utilization"] = max(gauges.get("utilization", 0.0), value)
    return gauges
