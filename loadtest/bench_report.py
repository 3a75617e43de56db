"""make bench's figures: one row per (variant, case, concurrency level) from the driver's run and Triton's
counters, and results.md from results.json's rows (the tables state their conditions above them)."""

from __future__ import annotations

import json
import statistics

import numpy as np

from loadtest.driver import STALL_MS
from loadtest.peak import against_peak
from loadtest.results import number, served_line, table

STAGES = ("preprocess", "encoder", "postprocess")


def summarize(concurrency: int, run: dict, deltas: dict, gpu: dict, server_cpu: dict | None = None,
              label_cache: dict | None = None, rss: dict | None = None) -> dict:
    rss = rss or {}
    latencies = sorted(run["latencies_ms"])

    def percentile(q: float) -> float:
        return float(np.percentile(latencies, q)) if latencies else float("nan")

    def stage(name: str, key: str) -> float:
        return deltas.get(name, {}).get(key, float("nan"))

    busy = {name: sum(deltas.get(name, {}).get(key, 0.0) for key in ("compute_infer_us", "compute_input_us",
                                                                      "compute_output_us")) for name in STAGES}
    ensemble = deltas.get("zero_shot", {})
    return {
        "concurrency": concurrency, "requests": len(latencies), "errors": run["errors"], "wrong": run["wrong"],
        "p50_ms": percentile(50), "p95_ms": percentile(95), "p99_ms": percentile(99),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "requests_per_s": len(latencies) / run["elapsed_s"], "pairs_per_s": run["pairs"] / run["elapsed_s"],
        "compute_ms": {name: stage(name, "avg_compute_ms") for name in STAGES},
        "queue_ms": {name: stage(name, "avg_queue_ms") for name in STAGES},
        "host_share": (busy["preprocess"] + busy["postprocess"]) / (sum(busy.values()) or float("nan")),
        "encoder_avg_batch": stage("encoder", "avg_batch"),
        # rows the encoder ran per answered request: 1 + labels in embedding mode without the label cache,
        # about 1 with it (the text) once the labels are cached
        "encoder_rows_per_request": deltas.get("encoder", {}).get("inferences", 0.0) / max(1, len(latencies)),
        "label_cache": label_cache,
        "cache_hit_share": ensemble.get("cache_hits", 0.0) / max(1, len(latencies)),
        # Triton's time per zero_shot request, arrival to response (all three models and the hops between them)
        "server_ms": ensemble.get("request_us", 0.0) / (ensemble.get("requests") or float("nan")) / 1e3,
        "gpu_memory_mb": gpu.get("memory_used_mb_max"),
        # the local server's RSS (tritonserver and its stubs) at its highest during the level
        "server_rss_max_mib": rss.get("max_mib"),
        # CPU milliseconds per answered request, by process (tritonserver, each model's stubs) and for this
        # client: robust to other load on the machine, and what caps requests/s per core
        "server_cpu_ms": server_cpu,
        "client_cpu_ms": run["client_cpu_s"] * 1e3 / max(1, len(latencies)),
    }


def levels_table(rows: list[dict], keyed: list[str]) -> list[str]:
    header = [*keyed, "concurrency", "p50 ms", "p95 ms", "p99 ms", "req/s", "pairs/s", "errors", "wrong",
              "encoder batch", "encoder rows/req", "tokenize+post share", "cache hits", "label cache hits", "GPU MB",
              "server RSS max MiB", "server CPU ms/req", "client CPU ms/req"]
    cells = [[*(row[key] for key in keyed), row["concurrency"], number(row["p50_ms"]), number(row["p95_ms"]),
              number(row["p99_ms"]), number(row["requests_per_s"]), number(row["pairs_per_s"], 0),
              sum(row["errors"].values()), row["wrong"], number(row["encoder_avg_batch"]),
              number(row["encoder_rows_per_request"], 2), f"{row['host_share']:.0%}", f"{row['cache_hit_share']:.0%}",
              f"{row['label_cache']['hit_share']:.0%}" if row.get("label_cache") else "off",
              number(row["gpu_memory_mb"], 0) if row["gpu_memory_mb"] else "n/a",
              number(row.get("server_rss_max_mib"), 0),
              number(row["server_cpu_ms"]["total"], 2) if row.get("server_cpu_ms") else "n/a",
              number(row["client_cpu_ms"], 2)] for row in rows]
    return table(header, cells)


def cpu_table(rows: list[dict], keyed: list[str]) -> list[str]:
    """Server CPU ms per request by process, one row per level (nothing for a server on another host)."""
    rows = [row for row in rows if row.get("server_cpu_ms")]
    if not rows:
        return []
    names = ["tritonserver", *STAGES] + (["fronts"] if any("fronts" in row["server_cpu_ms"] for row in rows) else [])
    cells = [[*(row[key] for key in keyed), row["concurrency"],
              *(number(row["server_cpu_ms"].get(name, 0.0), 2) for name in names),
              number(row["server_cpu_ms"]["total"], 2),
              number(1e3 / row["server_cpu_ms"]["total"] if row["server_cpu_ms"]["total"] else None, 0)]
             for row in rows]
    return ["", "Server CPU ms per request, by process (/proc; tritonserver: gRPC, ensemble, batcher; fronts: the "
            "launcher's HTTP and gRPC fronts, when it runs them):", "",
            *table([*keyed, "concurrency", *names, "total", "requests/s per server core"], cells)]


def label_cache_table(rows: list[dict], keyed: list[str]) -> list[str]:
    """The label cache per level (embedding mode; nothing where the export has none)."""
    rows = [row for row in rows if row.get("label_cache")]
    if not rows:
        return []
    cells = [[*(row[key] for key in keyed), row["concurrency"], number(c["hits"], 0), number(c["misses"], 0),
              f"{c['hit_share']:.1%}", number(c["evictions"], 0), number(c["entries"], 0),
              number(c["bytes"] / 2**20, 2), number(c["budget_bytes"] / 2**20, 0)]
             for row in rows for c in [row["label_cache"]]]
    return ["", "Label cache (embedding mode; every preprocess instance together):", "",
            *table([*keyed, "concurrency", "hits", "misses (encoded)", "hit share", "evictions", "entries at the end",
                    "MiB held", "MiB budget"], cells)]


def ratios(rows: list[dict]) -> list[dict]:
    """Each variant's levels against the first variant's at the same case and concurrency: requests/s ×, p50 ÷."""
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    base = {(row["case"], row["concurrency"]): row for row in rows if row["variant"] == variants[0]}
    found = []
    for row in rows:
        first = base.get((row["case"], row["concurrency"]))
        if row["variant"] != variants[0] and first and first["requests_per_s"] and row["p50_ms"]:
            found.append({"variant": row["variant"], "against": variants[0], "case": row["case"],
                          "concurrency": row["concurrency"],
                          "requests_per_s_ratio": row["requests_per_s"] / first["requests_per_s"],
                          "p50_ratio": first["p50_ms"] / row["p50_ms"]})
    return found


def labels_line(mean_labels: dict[str, float]) -> str:
    """Labels per request on average, by case where the cases differ."""
    if len(set(mean_labels.values())) <= 1:
        return f"{next(iter(mean_labels.values()), 0.0):.1f} labels/request on average"
    return "labels/request on average: " + ", ".join(f"{mean:.1f} in {case}" for case, mean in mean_labels.items())


def markdown(meta: dict, rows: list[dict], ceilings: dict[str, dict]) -> str:
    keyed = [key for key in ("variant", "case") if any(row[key] for row in rows)]
    variants = "; ".join(f"{name}: {about}" for name, about in meta["variants"].items())
    title = f"# Benchmark {meta['started']}" + (f", preset {meta['preset']}" if meta.get("preset") else "")
    lines = [title, "",
             f"{served_line(meta)}; workload {meta['workload']} ({labels_line(meta['mean_labels'])}), "
             f"distinct requests, {meta['duration_s']:g} s per "
             f"level after {meta['warmup_s']:g} s warm-up, closed-loop async gRPC client on the same host, full "
             f"ensemble (tokenization included)" + (f"; variants (all served at once, measured in turn): {variants}"
                                                    if variants else "") + ".", "",
             *levels_table(rows, keyed), *cpu_table(rows, keyed), *label_cache_table(rows, keyed)]
    compared = ratios(rows) if "variant" in keyed else []
    if compared:
        lines += ["", f"Against {compared[0]['against']} (req/s ×: higher is better; p50 ÷: its p50 over this one's, "
                  "higher is better):", "",
                  *table(["variant", *(["case"] if "case" in keyed else []), "concurrency", "req/s ×", "p50 ÷"],
                         [[r["variant"], *([r["case"]] if "case" in keyed else []), r["concurrency"],
                           f"{r['requests_per_s_ratio']:.2f}×", f"{r['p50_ratio']:.2f}×"] for r in compared])]
    for name, ceiling in ceilings.items():
        refusals = ": " + "; ".join(ceiling["refusals"]) if ceiling["refusals"] else ""
        best = max((row for row in rows if row["variant"] == name), key=lambda row: row["pairs_per_s"])
        # in embedding mode an encoder row is the text or one label the label cache lacks, not a (text, label) pair
        pairs = meta["served"].get(name, {}).get("mode") != "embedding"
        unit = "pairs" if pairs else "encoder rows"
        lines += ["", f"Raw encoder ceiling{f' ({name})' if name else ''} (same server, same run): "
                  f"{ceiling['pairs_per_s']:.0f} {unit}/s with {ceiling['rows']} pre-tokenized {unit} of "
                  f"{ceiling['sequence']} tokens per request at concurrency {ceiling['concurrency']}; p50 "
                  f"{number(ceiling['p50_ms'])} ms, max {number(ceiling['max_ms'])} ms, {ceiling['stalls']} answers "
                  f"≥ {STALL_MS} ms (the dynamic batcher's stall, see docs/limits-failures-security.md), "
                  f"{ceiling['refused']} refused{refusals}. Full ensemble best: {best['pairs_per_s']:.0f} pairs/s "
                  + (f"({best['pairs_per_s'] / ceiling['pairs_per_s']:.0%} of the ceiling) " if pairs else
                     "(embedding mode: not a share of the ceiling, whose rows are texts and uncached labels) ")
                  + f"at concurrency {best['concurrency']}."]
        shape, peak = meta["served"].get(name, {}).get("shape"), meta.get("cpu_int8_peak")
        if shape and peak:
            sentence = against_peak(ceiling["pairs_per_s"], json.loads(shape), ceiling["sequence"], peak)
            lines[-1] += f" The raw encoder {sentence}."
    lines += ["", "tokenize+post share: preprocess + postprocess compute time over all three models' compute "
              "time (Triton's counters); encoder batch: pairs per encoder execution; encoder rows/req: rows the "
              "encoder ran per answered request (embedding mode: 1 + labels without the label cache, the text "
              "alone when the labels are cached); cache hits: Triton's response cache; label cache hits: "
              "hypotheses whose embedding came from the label cache."]
    return "\n".join(lines) + "\n"
