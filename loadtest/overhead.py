"""`make bench-overhead`: what the ensemble itself costs (gRPC, three Python-backend hops, tokenization,
scoring, the batcher's queue delay), measured where the encoder costs almost nothing: a tiny random
StructBERT (2 layers, hidden 32) on the CPU. On a GPU the encoder of a 3-label request takes ~1.6 ms; the
rest of the request's time is this overhead, and at saturation its CPU cost caps requests/s whatever the
GPU does.

Two servers, one after the other, on the same checkpoint:
- floor: exported with the GPU profiles' queue delay (500 µs); one request at a time (concurrency 1):
  p50, p50 less the encoder's queue wait (the part no batching setting can remove), and the encoder model
  alone fed the same pre-tokenized pairs (the baseline measured in the same run: the ensemble's overhead is
  the difference);
- ceiling: exported with the CPU defaults (python-ort, 2 ms queue delay); closed loop at --ceiling-levels:
  requests/s, and server CPU ms per request by process (/proc), i.e. requests/s per server core.
Writes results.md / results.json under loadtest/results/overhead-<date>-<hardware>/ with the conditions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from loadtest import bench
from loadtest.run import RESULTS, hardware, slug

# Goals for this measurement (2-core CPU, tiny model): the floor with the GPU profiles' queue delay, and
# saturation at twice what the ensemble did before this work: 412 requests/s at concurrency 8 (make bench),
# unless --before gives bench results of the earlier version measured on the same machine.
FLOOR_GOAL_MS = 2.5
CEILING_BEFORE_RPS = 412.0


def export(checkpoint: Path, repository: Path, **options) -> Path:
    from export.options import ExportOptions
    from export.pipeline import export_model

    return export_model(ExportOptions(model=str(checkpoint), repository=repository, gpu="none", max_length=128,
                                      **options))


def measure(repository: Path, levels: str, duration_s: float, out: Path, note: str) -> dict:
    args = bench.build_parser().parse_args([
        "--repository", str(repository), "--concurrency", levels, "--duration-s", str(duration_s),
        "--warmup-s", "3", "--ceiling-s", str(min(duration_s, 10)), "--out", str(out), "--note", note])
    folder = bench.run(args)
    return json.loads((folder / "results.json").read_text(encoding="utf-8")) | {"folder": folder.name}


def floor_figures(result: dict) -> dict:
    level = result["levels"][0]
    ceiling = result["encoder_ceiling"]
    encoder_alone_ms = ceiling["rows"] / ceiling["pairs_per_s"] * 1e3 if ceiling else float("nan")
    return {"p50_ms": level["p50_ms"], "p95_ms": level["p95_ms"],
            "encoder_queue_ms": level["queue_ms"]["encoder"],
            "p50_without_queue_delay_ms": level["p50_ms"] - level["queue_ms"]["encoder"],
            "encoder_alone_ms": encoder_alone_ms, "server_cpu_ms": level["server_cpu_ms"],
            "client_cpu_ms": level["client_cpu_ms"]}


def ceiling_figures(result: dict) -> dict:
    best = max(result["levels"], key=lambda level: level["requests_per_s"])
    cpu = best["server_cpu_ms"] or {}
    return {"concurrency": best["concurrency"], "requests_per_s": best["requests_per_s"],
            "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"], "server_cpu_ms": cpu,
            "requests_per_s_per_server_core": 1e3 / cpu["total"] if cpu.get("total") else None,
            "client_cpu_ms": best["client_cpu_ms"], "errors": sum(best["errors"].values()), "wrong": best["wrong"]}


def before_figures(paths: list[Path]) -> dict | None:
    """The earlier version's floor and ceiling from its bench results.json files (same machine)."""
    levels = [level for path in paths for level in json.loads(path.read_text(encoding="utf-8"))["levels"]]
    if not levels:
        return None
    alone = [level for level in levels if level["concurrency"] == 1]
    best = max(levels, key=lambda level: level["requests_per_s"])
    return {"p50_ms": alone[0]["p50_ms"] if alone else None, "requests_per_s": best["requests_per_s"],
            "concurrency": best["concurrency"], "sources": [str(path) for path in paths]}


def markdown(meta: dict, floor: dict, ceiling: dict, before: dict | None = None) -> str:
    cpu_names = ("tritonserver", "preprocess", "encoder", "postprocess")

    def cpu_cells(cpu: dict) -> str:
        return " | ".join(f"{cpu.get(name, 0.0):.2f}" for name in cpu_names) + f" | {cpu.get('total', 0.0):.2f}"

    floor_ok = "met" if floor["p50_ms"] <= FLOOR_GOAL_MS else "missed"
    before_rps = before["requests_per_s"] if before else CEILING_BEFORE_RPS
    ceiling_ok = "met" if ceiling["requests_per_s"] >= 2 * before_rps else "missed"
    before_line = ([f"Before (the earlier version, same machine, {meta.get('before_note') or 'same conditions'}): "
                    f"p50 {before['p50_ms']:.2f} ms at one request, {before['requests_per_s']:.0f} requests/s at "
                    f"concurrency {before['concurrency']}; now {floor['p50_ms'] / before['p50_ms']:.2f}x the p50 and "
                    f"{ceiling['requests_per_s'] / before['requests_per_s']:.2f}x the requests/s.", ""]
                   if before and before.get("p50_ms") else [])
    return "\n".join([
        f"# Ensemble overhead {meta['started']}", "",
        f"Tiny random StructBERT (2 layers, hidden 32: encoder cost near zero), python-ort FP32, max_length 128, "
        f"{meta['hardware']}; closed-loop async gRPC client on the same cores; workload {meta['workload']} "
        f"(fresh label sets, {meta['mean_labels']:.1f} labels/request, no response-cache hits), "
        f"{meta['duration_s']:.0f} s per level after 3 s warm-up.", "",
        "## Floor: one request at a time, encoder queue delay 500 µs (the GPU profiles')", "",
        "| p50 ms | p95 ms | encoder queue wait ms | p50 without the queue wait | encoder model alone, same pairs |",
        "|---|---|---|---|---|",
        f"| {floor['p50_ms']:.2f} | {floor['p95_ms']:.2f} | {floor['encoder_queue_ms']:.2f} | "
        f"{floor['p50_without_queue_delay_ms']:.2f} | {floor['encoder_alone_ms']:.2f} |", "",
        f"Goal p50 ≤ {FLOOR_GOAL_MS} ms: {floor_ok}.", "",
        f"## Ceiling: CPU defaults (queue delay 2 ms), best of concurrency {meta['ceiling_levels']}", "",
        "| concurrency | requests/s | p50 ms | p99 ms | requests/s per server core | errors | wrong |",
        "|---|---|---|---|---|---|---|",
        f"| {ceiling['concurrency']} | {ceiling['requests_per_s']:.0f} | {ceiling['p50_ms']:.1f} | "
        f"{ceiling['p99_ms']:.1f} | {ceiling['requests_per_s_per_server_core'] or float('nan'):.0f} | "
        f"{ceiling['errors']} | {ceiling['wrong']} |", "",
        f"Goal ≥ 2 × {before_rps:.0f} requests/s (the ensemble before this work"
        f"{', measured beside it' if before else ', make bench at concurrency 8 on this machine'}): {ceiling_ok}.", "",
        *before_line,
        "## Server CPU ms per request, by process (/proc)", "",
        "| run | " + " | ".join(cpu_names) + " | total | client CPU ms |", "|---" * 7 + "|",
        f"| floor (concurrency 1) | {cpu_cells(floor['server_cpu_ms'] or {})} | {floor['client_cpu_ms']:.2f} |",
        f"| ceiling (concurrency {ceiling['concurrency']}) | {cpu_cells(ceiling['server_cpu_ms'])} | "
        f"{ceiling['client_cpu_ms']:.2f} |", "",
        f"Per-level tables: {meta['floor_folder']}/results.md, {meta['ceiling_folder']}/results.md.", ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=20.0, help="per concurrency level (default: 20)")
    parser.add_argument("--ceiling-levels", default="16,32",
                        help="concurrency levels for the ceiling (default: %(default)s)")
    parser.add_argument("--before", type=Path, nargs="*", default=[],
                        help="bench results.json files of the earlier version on this machine: the goals' baseline")
    parser.add_argument("--before-note", default="", help="what --before measured (e.g. the commit)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results parent folder (default: %(default)s)")
    args = parser.parse_args(argv)
    from export.random_checkpoint import write_modelscope_structbert

    started = datetime.now()
    folder = args.out / f"overhead-{started.strftime('%Y%m%d-%H%M%S')}-{slug(hardware())}"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="zsc-overhead-") as tmp:
        checkpoint = write_modelscope_structbert(Path(tmp) / "checkpoint", shape="tiny")
        floor_repo = export(checkpoint, Path(tmp) / "floor", queue_delay_us=500)
        ceiling_repo = export(checkpoint, Path(tmp) / "ceiling")
        floor_run = measure(floor_repo, "1", args.duration_s, folder, "tiny random StructBERT, queue delay 500 us")
        ceiling_run = measure(ceiling_repo, args.ceiling_levels, args.duration_s, folder,
                              "tiny random StructBERT, CPU defaults")
    meta = floor_run["meta"] | {"started": started.isoformat(timespec="seconds"),
                                "ceiling_levels": args.ceiling_levels, "floor_folder": floor_run["folder"],
                                "ceiling_folder": ceiling_run["folder"]}
    floor, ceiling = floor_figures(floor_run), ceiling_figures(ceiling_run)
    before = before_figures(args.before)
    meta["before_note"] = args.before_note
    (folder / "results.json").write_text(json.dumps({"meta": meta, "floor": floor, "ceiling": ceiling,
                                                     "before": before}, indent=2) + "\n", encoding="utf-8")
    report = markdown(meta, floor, ceiling, before)
    (folder / "results.md").write_text(report, encoding="utf-8")
    print(report)
    print(f"[overhead] results in {folder}")
    return 1 if ceiling["wrong"] or ceiling["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
