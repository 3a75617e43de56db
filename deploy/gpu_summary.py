"""What a GPU host's run brought back, in one line and one page (standard library only: it runs on the GPU
host's python3 as the last step of deploy/gpu/bench-on-gpu-host.sh and compare-on-gpu-host.sh).

  python3 -m deploy.gpu_summary RESULTS            # summary.json + summary.md, one line printed; exit 1 unless
                                                   # every step in RESULTS/steps.tsv passed
  python3 -m deploy.gpu_summary --levels RESULTS   # one line per bench level of every variant (the comparison)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BENCH_FIELDS = ("concurrency", "p50_ms", "p99_ms", "requests_per_s", "pairs_per_s", "wrong", "host_share",
                "encoder_avg_batch")


def read_steps(results: Path) -> list[dict]:
    steps = []
    for line in (results / "steps.tsv").read_text(encoding="utf-8").splitlines():
        name, status, seconds, note = (line.split("\t") + [""] * 4)[:4]
        steps.append({"name": name, "status": status, "seconds": float(seconds or 0), "note": note})
    return steps


def summarize(results: Path) -> dict:
    summary: dict = {"steps": read_steps(results)}
    bench = sorted(results.glob("bench-*/results.json"))
    if bench:
        data = json.loads(bench[-1].read_text(encoding="utf-8"))
        summary["bench"] = {"folder": bench[-1].parent.name, "meta": data["meta"],
                            "levels": [{key: level[key] for key in BENCH_FIELDS}
                                       | {"errors": sum(level["errors"].values())} for level in data["levels"]],
                            "encoder_ceiling": next(iter(data["encoder_ceilings"].values()), None)}
    memory = results / "memory.json"
    if memory.is_file():
        data = json.loads(memory.read_text(encoding="utf-8"))
        fitted = [row for row in data["shapes"] if not row.get("out_of_memory")]
        summary["memory"] = {"device": data["meta"]["device_name"], "weights_mib": data["meta"]["weights_mib"],
                             "shapes": len(data["shapes"]), "out_of_memory": len(data["shapes"]) - len(fitted),
                             "not_measured": data["meta"].get("not_measured", []), "fastest": fastest(fitted)}
    return summary


def fastest(rows: list[dict]) -> list[dict]:
    """The raw encoder's best tokens/s for each precision and layout the memory step measured, and where."""
    best: dict[tuple, dict] = {}
    for row in rows:
        key = (row.get("precision", ""), row.get("layout", "padded"))  # runs before the packed layout: padded
        if "tokens_per_s" in row and row["tokens_per_s"] > best.get(key, {}).get("tokens_per_s", 0):
            best[key] = row
    return [{key: row[key] for key in ("precision", "layout", "batch", "sequence", "tokens_per_s") if key in row}
            for row in best.values()]


def one_line(summary: dict, results: Path) -> str:
    steps = summary["steps"]
    ok = sum(step["status"] == "ok" for step in steps)
    not_ok = ", ".join(f"{step['name']}: {step['status']}" for step in steps if step["status"] != "ok")
    seconds = sum(step["seconds"] for step in steps)
    parts = [f"gpu-run: {ok}/{len(steps)} steps ok{f' ({not_ok})' if not_ok else ''} in {seconds:.0f} s"]
    bench = summary.get("bench")
    if bench and bench["levels"]:
        first, best = bench["levels"][0], max(bench["levels"], key=lambda level: level["pairs_per_s"])
        wrong = sum(level["wrong"] + level["errors"] for level in bench["levels"])
        parts.append(f"bench: c{first['concurrency']} p50 {first['p50_ms']:.1f} ms, best {best['pairs_per_s']:.0f} "
                     f"pairs/s at c{best['concurrency']}, {wrong} wrong/failed")
        if bench["encoder_ceiling"]:
            parts[-1] += f", raw encoder {bench['encoder_ceiling']['pairs_per_s']:.0f} pairs/s"
    if summary.get("memory"):
        memory = summary["memory"]
        parts.append(f"memory: {memory['shapes']} shapes on {memory['device']}, "
                     f"{memory['out_of_memory']} out of memory")
        if memory["fastest"]:
            parts.append("raw encoder, best tokens/s: " + ", ".join(
                f"{row.get('precision', '')} {row.get('layout', '')} {row['tokens_per_s'] / 1e6:.2f} M "
                f"(b{row['batch']}x{row['sequence']})" for row in memory["fastest"]))
    return "; ".join(parts + [f"results: {results}"])


def markdown(summary: dict, results: Path) -> str:
    lines = ["# GPU run", "", one_line(summary, results), "", "| step | status | seconds | note |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.0f} | {s['note']} |" for s in summary["steps"]]
    for section in sorted(results.glob("bench-*/results.md"))[-1:] + [results / "memory.md"]:
        if section.is_file():  # their titles one level down
            lines += ["", section.read_text(encoding="utf-8").replace("# ", "## ", 1)]
    return "\n".join(lines) + "\n"


def level_lines(results: Path) -> list[str]:
    lines = []
    for path in sorted(results.glob("*/bench-*/results.json")):
        data, variant = json.loads(path.read_text(encoding="utf-8")), path.parts[-3]
        for level in data["levels"]:
            lines.append(f"{variant:>12} c{level['concurrency']:<4} p50 {level['p50_ms']:6.1f} ms  p99 "
                         f"{level['p99_ms']:6.1f} ms  {level['pairs_per_s']:7.0f} pairs/s  batch "
                         f"{level['encoder_avg_batch']:5.1f}  wrong {level['wrong']}  "
                         f"errors {sum(level['errors'].values())}")
        ceiling = next(iter(data["encoder_ceilings"].values()), None) or {}
        lines.append(f"{variant:>12} raw encoder {ceiling.get('pairs_per_s', 0):.0f} pairs/s")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m deploy.gpu_summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the run's results folder")
    parser.add_argument("--levels", action="store_true", help="print each variant's bench levels instead")
    args = parser.parse_args(argv)
    if args.levels:
        print("\n".join(level_lines(args.results)))
        return 0
    summary = summarize(args.results)
    (args.results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (args.results / "summary.md").write_text(markdown(summary, args.results), encoding="utf-8")
    print(one_line(summary, args.results), flush=True)
    return 0 if all(step["status"] == "ok" for step in summary["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
