"""The label cache's counters as Prometheus metrics on Triton's metrics port, through the Python backend's
custom-metrics API (importable only inside Triton). One series per preprocess instance (label `instance`):
each instance is a process with its own cache; the dashboard sums them."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from zsc_server.label_cache import CacheCounters, LabelCache

COUNTERS = {
    "hits": ("zsc_label_cache_hits", "Hypotheses whose embedding came from the label cache"),
    "misses": ("zsc_label_cache_misses", "Hypotheses the label cache had to have encoded"),
    "evictions": ("zsc_label_cache_evictions", "Label cache entries dropped to stay within the budget"),
}
GAUGES = {
    "bytes_held": ("zsc_label_cache_bytes", "Bytes the label cache holds (keys, vectors, bookkeeping)"),
    "entries": ("zsc_label_cache_entries", "Hypothesis embeddings the label cache holds"),
    "budget_bytes": ("zsc_label_cache_budget_bytes", "The label cache's budget in bytes"),
}


class CacheMetrics:
    def __init__(self, model_name: str, instance_name: str) -> None:
        labels = {"model": model_name, "instance": instance_name}
        # the families must outlive their metrics (the backend refuses a metric whose family was deleted)
        self._families = {
            key: pb_utils.MetricFamily(name=name, description=text, kind=kind)
            for kinds, kind in ((COUNTERS, pb_utils.MetricFamily.COUNTER), (GAUGES, pb_utils.MetricFamily.GAUGE))
            for key, (name, text) in kinds.items()
        }
        self._metrics = {key: family.Metric(labels=labels) for key, family in self._families.items()}
        self._published = CacheCounters()
        self._gauges: dict[str, int] = {}

    def publish(self, cache: LabelCache) -> None:
        """Bring the series up to `cache`'s state. Each metric update is a message to tritonserver, so only
        what changed is sent: one counter for a request served from the cache."""
        for key in COUNTERS:
            delta = getattr(cache.counters, key) - getattr(self._published, key)
            if delta:
                self._metrics[key].increment(delta)
                setattr(self._published, key, getattr(cache.counters, key))
        for key, value in (("bytes_held", cache.bytes_held), ("entries", len(cache)),
                           ("budget_bytes", cache.budget_bytes)):
            if self._gauges.get(key) != value:
                self._metrics[key].set(value)
                self._gauges[key] = value

    def close(self) -> None:
        """Metrics before their families, as the backend requires (called from the model's finalize)."""
        self._metrics.clear()
        self._families.clear()
