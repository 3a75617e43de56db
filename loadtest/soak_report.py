"""The soak's verdict and report (loadtest/soak.py): goals met or missed, report.md from report.json."""

from __future__ import annotations

import json

import numpy as np

from loadtest.results import table

ACCEPTED_P95_CEILING_MS = 1000.0  # under overload, accepted answers within a second, whatever the capacity
PROTOCOLS = {"grpc": "gRPC", "http": "HTTP (KServe v2 JSON)"}
REFUSAL_P95_MS = 50.0  # a refusal is worth having only if it comes at once: the caller retries elsewhere
RECOVERY_S = 5.0  # after a burst, back to the latency of the same load before it within this

def verdict(report: dict) -> list[str]:
    """What makes the soak fail (empty: passed)."""
    soak, server = report["soak"], report["server"]
    problems = []
    for key in ("mismatched", "lost", "failed"):
        if soak[key]:
            problems.append(f"{soak[key]} {key}")
    if server["crashed"]:
        problems.append("the server crashed")
    elif not server["ready"] or server["answer"] != "correct":
        problems.append(f"the server was not ready and answering correctly {server['answered_after_s']:.0f} s "
                        f"after the load ({server['answer']})")
    return problems


def markdown(report: dict) -> str:
    meta, capacity, soak, memory, server = (report[k] for k in ("meta", "capacity", "soak", "memory", "server"))
    unloaded, rates, latency = report.get("unloaded"), soak["rates"], soak["latency_ms"]
    measured = "given with --capacity, not measured" if capacity.get("given") else (
        f"closed loop, {capacity['concurrency']} workers, {capacity['seconds']:.0f} s")
    rows = [[f"capacity ({measured})", f"{capacity['requests_per_s']:.1f} req/s"
             + (f", p50 {capacity['p50_ms']} ms, p95 {capacity['p95_ms']} ms" if capacity.get("p95_ms") else "")],
            ["unloaded latency (one request at a time)", f"p50 {unloaded['p50_ms']} ms, p95 {unloaded['p95_ms']} ms "
             f"({unloaded['requests']} requests)" if unloaded else "not measured"],
            ["offered load", f"{meta['load']:g} x capacity = {rates['offered_per_s']:.1f} req/s for "
             f"{meta['duration_s']:.0f} s (sent at {rates['achieved_send_per_s']:.1f} req/s)"
             + "".join(f", then {rate:.1f} req/s for {seconds:.0f} s" for rate, seconds in rates["phases"][1:])],
            ["sent", soak["sent"]],
            ["correct", f"{soak['correct']} ({soak['correct'] / max(1, soak['sent']):.1%}), "
             f"{soak['correct'] / max(1e-9, rates['sending_s']):.1f} req/s"],
            ["rejected", f"{soak['rejected']} {_counts(soak['rejected_by_kind'])}"],
            ["failed", f"{soak['failed']} {_counts(soak['failed_by_message'])}"],
            ["mismatched", soak["mismatched"]], ["lost", soak["lost"]],
            ["latency of refusals", _latency(soak.get("refusal_latency_ms"))],
            ["latency of correct answers", f"p50 {latency['p50']} ms, p95 {latency['p95']} ms, p99 {latency['p99']} "
             f"ms, max {latency['max']} ms"],
            ["peak requests in flight", rates["peak_in_flight"] if not rates.get("max_connections") else
             f"{rates['peak_in_flight']} (HTTP connections allowed: {rates['max_connections']})"],
            ["RSS, tritonserver + children", f"median {memory['first_window_median_mib']} MiB in the first "
             f"{memory['window_s']:.0f} s, {memory['last_window_median_mib']} MiB in the last; slope "
             f"{memory['slope_mib_per_min']:+.2f} MiB/min overall, {memory['slope_second_half_mib_per_min']:+.2f} "
             f"MiB/min over the second half; max {memory['max_mib']} MiB ({memory['samples']} samples, every "
             f"{memory['period_s']:g} s; the response cache, when on, grows until full)"] if memory["sampled"] else
            ["RSS", "not sampled (no local tritonserver found for this port; pass --server-pid)"],
            ["server after the load", f"live {server['live']}, ready {server['ready']}, fresh request: "
             f"{server['answer']} after {server['answered_after_s']:.1f} s"],
            *(["process event", event] for event in memory.get("events", []))]
    lines = [f"# Soak {meta['started']}: {'PASSED' if not report['problems'] else 'FAILED'}", "",
             f"{meta['model']}, {meta['runtime']}, {meta['precision']}, max_length {meta['max_length']}, "
             f"{meta['mode']} mode; {meta['hardware']}; workload {meta['workload']} ({meta['label_mode']} labels); "
             f"open-loop Poisson arrivals from one async {PROTOCOLS[meta.get('protocol', 'grpc')]} client "
             f"(zsc_client) on the same host, every request distinct ({_cache_hits(report)}); client timeout "
             f"{meta['timeout_s']:.0f} s; encoder batching: "
             f"{json.dumps(meta['queue_policy'])}.", "",
             *table(["", ""], rows)]
    if report["problems"]:
        lines += ["", "Failed because: " + "; ".join(report["problems"]) + "."]
    lines += ["", *goal_lines(report["goals"])]
    if soak["examples"]:
        lines += ["", "Examples:", *[f"- {example}" for example in soak["examples"]]]
    lines += ["", "Timeline (per 10 s of send time)", "", *table(
        ["t (s)", "sent", "correct", "rejected", "other", "p50 ms"],
        [[f"{row['t_s']:.0f}", row["sent"], row["correct"], row["rejected"], row["other"],
          "-" if row["p50_ms"] is None else row["p50_ms"]] for row in soak["timeline"]])]
    return "\n".join(lines) + "\n"


def goal_lines(result: dict) -> list[str]:
    def mark(met: bool) -> str:
        return "met" if met else "MISSED"

    lines = ["Goals (steady phase):",
             f"- correct answers/s {result['goodput_share']:.0%} of the lesser of capacity and offered load "
             f"(goal ≥ 90%): "
             f"{mark(result['goodput_met'])}",
             f"- p95 of correct answers {result['accepted_p95_ms']} ms vs the p95 at capacity "
             + (f"{result['capacity_p95_ms']} ms (goal ≤ 3x and ≤ {ACCEPTED_P95_CEILING_MS:.0f} ms): "
                if result["capacity_p95_ms"] else f"(none: capacity given) (goal ≤ {ACCEPTED_P95_CEILING_MS:.0f} ms): ")
             + f"{mark(result['capacity_latency_met'])} (unloaded p95: {result['unloaded_p95_ms']} ms)",
             f"- refusals (whole run) answered in p95 {result['refusal_p95_ms']} ms (goal ≤ {REFUSAL_P95_MS:.0f} ms): "
             f"{mark(result['refusal_met'])}"]
    if "burst_goodput_share" in result:
        lines.append(f"- during the burst, correct answers/s {result['burst_goodput_share']:.0%} of the lesser of "
                     f"capacity and offered load (goal ≥ 90%): {mark(result['burst_goodput_met'])}")
    if "recovered_after_s" in result:
        after = result["recovered_after_s"]
        lines.append(f"- after the burst, per-second medians back under the pre-burst p95 "
                     f"({result['recovery_bound_ms']} ms) in {'never' if after is None else f'{after:.0f} s'} "
                     f"(goal ≤ {RECOVERY_S:.0f} s): {mark(result['recovery_met'])}")
    return lines


def _cache_hits(report: dict) -> str:
    """What Triton's response cache answered during the soak, from its counters."""
    ensemble = report.get("triton_counters", {}).get("zero_shot")
    if not ensemble:
        return "response cache: no counters"
    return f"answered from the response cache: {ensemble.get('cache_hits', 0):.0f}"


def _latency(latency: dict | None) -> str:
    if not latency or latency.get("p50") is None:
        return "none refused"
    return f"p50 {latency['p50']} ms, p95 {latency['p95']} ms, max {latency['max']} ms"


def _counts(counts: dict[str, int]) -> str:
    return "(" + ", ".join(f"{key}: {value}" for key, value in counts.items()) + ")" if counts else ""


def recovery_s(per_second: dict[int, list[float]], burst_end_s: float, until_s: float, bound_ms: float) -> float | None:
    """Seconds after the burst's end until the per-second median latency stays at or under `bound_ms` for
    the rest of the run (None: it never did)."""
    seconds = [s for s in range(int(burst_end_s), int(until_s)) if per_second.get(s)]
    recovered = None
    for second in seconds:
        if np.median(per_second[second]) <= bound_ms:
            recovered = second if recovered is None else recovered
        else:
            recovered = None
    return None if recovered is None else max(0.0, recovered - burst_end_s)


def goals(report: dict, phases: list[tuple[float, float]], per_second: dict[int, list[float]]) -> dict:
    """The overload goals over the first phase (the steady load), and the burst's recovery when there was one."""
    steady_s = phases[0][1]
    steady = sorted(latency for second, latencies in per_second.items() if second < steady_s for latency in latencies)
    # what the server could answer: all of it below capacity (--load < 1), its capacity above
    answerable = min(phases[0][0], report["capacity"]["requests_per_s"])
    unloaded_p95 = (report.get("unloaded") or {}).get("p95_ms")
    result = {"goodput_share": round(len(steady) / steady_s / answerable, 3),
              "accepted_p95_ms": round(float(np.percentile(steady, 95)), 1) if steady else None,
              "unloaded_p95_ms": unloaded_p95, "capacity_p95_ms": report["capacity"].get("p95_ms")}
    result["goodput_met"] = result["goodput_share"] >= 0.9
    # a caller would rather be refused fast than wait: accepted answers near what a saturated server gives
    capacity_p95 = result["capacity_p95_ms"]
    # a capacity given rather than measured has no p95 of its own: the ceiling alone applies
    given = report["capacity"].get("given")
    bound_ms = ACCEPTED_P95_CEILING_MS if given else min(3 * (capacity_p95 or 0), ACCEPTED_P95_CEILING_MS)
    result["capacity_latency_met"] = bool(steady and result["accepted_p95_ms"] <= bound_ms)
    result["refusal_p95_ms"] = report["soak"].get("refusal_latency_ms", {}).get("p95")
    result["refusal_met"] = result["refusal_p95_ms"] is None or result["refusal_p95_ms"] <= REFUSAL_P95_MS
    if len(phases) == 3 and steady:
        # back to the latency the same normal load had before the burst (--load, --after-load: run both equal)
        bound = result["accepted_p95_ms"]
        burst_end = phases[0][1] + phases[1][1]
        result["recovery_bound_ms"] = bound
        result["recovered_after_s"] = recovery_s(per_second, burst_end, burst_end + phases[2][1], bound)
        result["recovery_met"] = result["recovered_after_s"] is not None and result["recovered_after_s"] <= RECOVERY_S
        # the overload itself: what the server answered correctly while the burst was offered
        burst_answers = sum(len(latencies) for second, latencies in per_second.items()
                            if steady_s <= second < burst_end)
        result["burst_goodput_share"] = round(burst_answers / phases[1][1] / min(
            phases[1][0], report["capacity"]["requests_per_s"]), 3)
        result["burst_goodput_met"] = result["burst_goodput_share"] >= 0.9
    return result


def summary_line(report: dict) -> str:
    soak, memory = report["soak"], report["memory"]
    rss = (f"RSS {memory['first_window_median_mib']} -> {memory['last_window_median_mib']} MiB "
           f"({memory['slope_mib_per_min']:+.2f} MiB/min)" if memory["sampled"] else "RSS not sampled")
    return (f"{soak['sent']} sent: {soak['correct']} correct, {soak['rejected']} rejected, {soak['failed']} failed, "
            f"{soak['mismatched']} mismatched, {soak['lost']} lost; p95 {soak['latency_ms']['p95']} ms; {rss}; "
            f"server {'crashed' if report['server']['crashed'] else 'up'}, fresh request {report['server']['answer']} "
            f"after {report['server']['answered_after_s']:.1f} s")
