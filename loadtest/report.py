"""Merge load-test results folders (any number: several GPU types, runtimes, baselines) into the reference deployment's
tables, plots and a recommendation matrix.

  python -m loadtest.report loadtest/results/FOLDER [FOLDER ...] [--out DIR] [--prices loadtest/prices.json]

Writes DIR/report.md, DIR/latency_vs_users.png and DIR/throughput_vs_users.png, and prints the tables.
The recommendation matrix prices each setup from the editable price table (--prices): for each traffic
level, the instances needed at the highest measured rate that still met the P95 objective (--slo-p95-ms)
with at least 99.9% success, times the hourly price.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
from pathlib import Path

from loadtest.results import number
from loadtest.results import table as table_lines

DEFAULT_PRICES = Path(__file__).resolve().parent / "prices.json"
TRAFFIC_LEVELS = (1, 10, 50, 100, 500, 1000, 5000)  # requests per second
MIN_SUCCESS = 0.999


@dataclasses.dataclass
class RunRow:
    """One Locust run (one user count) of one setup."""

    users: int
    requests: int
    failures: int
    avg_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float
    pairs_per_s: float
    encoder_queue_ms: float | None = None
    encoder_compute_ms: float | None = None
    encoder_batch: float | None = None
    gpu_memory_mb: float | None = None
    # Triton's response cache (the ensemble's counters over the run); None: a server without one
    cache_hits: float | None = None
    server_requests: float | None = None

    @property
    def success_rate(self) -> float:
        return (self.requests - self.failures) / self.requests if self.requests else 0.0

    def cache_cell(self) -> str:
        """How many answers came from the response cache, and their share of the answers."""
        if self.cache_hits is None:
            return "n/a (no cache)"
        share = self.cache_hits / self.server_requests if self.server_requests else 0.0
        return f"{self.cache_hits:,.0f} ({share:.1%})"


@dataclasses.dataclass
class ResultSet:
    folder: Path
    meta: dict
    rows: dict[int, RunRow]

    @property
    def label(self) -> str:
        hardware = self.meta["hardware"] if len(self.meta["hardware"]) <= 32 else self.meta["hardware"][:31] + "…"
        return f"{self.meta['target']} · {self.meta['runtime']}/{self.meta['precision']} · {hardware}"


def _number(value: str) -> float:
    return float(value) if value not in ("", "N/A") else math.nan


def read_run(folder: Path, users: int, mean_labels: float | None = None) -> RunRow:
    """One user count's run: Locust's Aggregated row, with Triton's counters and GPU memory beside it."""
    with open(folder / f"u{users}_stats.csv", newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]
    if not rows:
        raise ValueError(f"{folder / f'u{users}_stats.csv'} has no Aggregated row")
    stats = rows[0]
    if mean_labels is None:
        mean_labels = json.loads((folder / "meta.json").read_text(encoding="utf-8"))["mean_labels"]
    requests, failures = int(stats["Request Count"]), int(stats["Failure Count"])
    figures = {key: _number(stats[column]) for key, column in (("avg_ms", "Average Response Time"), ("p50_ms", "50%"),
                                                               ("p95_ms", "95%"), ("p99_ms", "99%"),
                                                               ("rps", "Requests/s"))}
    # a failed request scored nothing: pairs/s counts answered requests only
    row = RunRow(users=users, requests=requests, failures=failures, **figures,
                 pairs_per_s=figures["rps"] * mean_labels * (1 - failures / max(requests, 1)))
    server_file = folder / f"u{users}_server.json"
    server = json.loads(server_file.read_text(encoding="utf-8")) if server_file.is_file() else {}
    ensemble, encoder = (server.get("models", {}).get(model) for model in ("zero_shot", "encoder"))
    if ensemble:
        row.cache_hits, row.server_requests = ensemble.get("cache_hits", 0.0), ensemble.get("requests", 0.0)
    if encoder and encoder.get("requests"):
        row.encoder_queue_ms, row.encoder_compute_ms = encoder["avg_queue_ms"], encoder["avg_compute_ms"]
        row.encoder_batch = encoder["avg_batch"]
    row.gpu_memory_mb = (server.get("nvidia_smi", {}).get("memory_used_mb_max")
                         or server.get("triton_gpu", {}).get("memory_used_mb") or None)
    return row


def read_results(folder: Path) -> ResultSet:
    meta_file = folder / "meta.json"
    if not meta_file.is_file():
        raise ValueError(f"{folder} is not a results folder (no meta.json)")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    rows = {users: read_run(folder, users, meta["mean_labels"]) for users in meta["users"]
            if (folder / f"u{users}_stats.csv").is_file()}
    if not rows:
        raise ValueError(f"{folder} has no u<N>_stats.csv")
    return ResultSet(folder, meta, rows)


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(table_lines(header, rows))


def requests_kind(meta: dict) -> str:
    """Whether the run's requests were all distinct (the response cache cannot answer) or repeat."""
    if "distinct" not in meta:
        return "not recorded"
    return "distinct" if meta["distinct"] else "repeating (cache may answer)"


def conditions(results: list[ResultSet]) -> str:
    rows = [[r.label, r.meta["hardware"], str(r.meta["model"]), str(r.meta.get("max_length") or "n/a"),
             f"{r.meta['label_mode']}, {r.meta['mean_labels']:.1f} labels/request", requests_kind(r.meta),
             r.meta["protocol"], r.meta["duration"], r.meta["started"]] for r in results]
    return table(["Setup", "Hardware", "Model", "Max length", "Labels", "Requests", "Protocol", "Duration/run",
                  "Started"], rows)


def users_table(results: list[ResultSet], users: int) -> str:
    """The reference deployment's tables: one user with the GPU memory, N users with requests/s."""
    single = users == 1
    rows = [[r.label, number(row.avg_ms), number(row.p95_ms),
             *([f"{row.gpu_memory_mb / 1024:.1f} GiB" if row.gpu_memory_mb else "n/a (no GPU)"] if single else []),
             f"{row.success_rate:.2%}", *([] if single else [number(row.rps)])]
            for r in results for row in [r.rows.get(users)] if row]
    return table(["Setup", "Avg latency (ms)", "P95 (ms)",
                  *(["GPU memory", "Success"] if single else ["Success rate", "Requests/s"])], rows)


def throughput_table(results: list[ResultSet]) -> str:
    rows = [[r.label, str(users), number(row.rps), number(row.pairs_per_s, 0), row.cache_cell(),
             number(row.encoder_queue_ms, 2), number(row.encoder_compute_ms, 2), number(row.encoder_batch, 1)]
            for r in results for users, row in sorted(r.rows.items())]
    return table(["Setup", "Users", "Requests/s", "Pairs/s", "Answered from cache", "Encoder queue (ms/req)",
                  "Encoder compute (ms/req)", "Pairs per encoder execution"], rows)


def recommendation_matrix(results: list[ResultSet], prices: dict[str, float], slo_p95_ms: float) -> str:
    """Per traffic level, what each setup costs: instances at its capacity (its highest measured requests/s with
    P95 within the objective and success >= 99.9%) times its hardware's price (the longest key it contains)."""
    capacities = [max((row.rps for row in r.rows.values() if row.p95_ms <= slo_p95_ms
                       and row.success_rate >= MIN_SUCCESS), default=0.0) for r in results]
    priced = [max(((len(key), price) for key, price in prices.items() if key.lower() in r.meta["hardware"].lower()),
                  default=(0, None))[1] for r in results]
    rows = []
    for traffic in TRAFFIC_LEVELS:
        cells, costs = [], []
        for result, rate, price in zip(results, capacities, priced):
            if rate <= 0:
                cells.append(f"misses P95 ≤ {slo_p95_ms:.0f} ms")
            elif price is None:
                cells.append(f"{math.ceil(traffic / rate)}× (no price)")
            else:
                costs.append((math.ceil(traffic / rate) * price, result.label))
                cells.append(f"{math.ceil(traffic / rate)}× = ${costs[-1][0]:,.2f}/h")
        rows.append([str(traffic)] + cells + [min(costs)[1] if costs else "n/a"])
    return table(["Traffic (req/s)"] + [r.label for r in results] + ["Recommended"], rows)


def plot(results: list[ResultSet], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, title, values, ylabel in (
        ("latency_vs_users.png", "Latency vs users", lambda row: (row.avg_ms, row.p95_ms), "ms"),
        ("throughput_vs_users.png", "Throughput vs users", lambda row: (row.rps,), "requests/s"),
    ):
        figure, axes = plt.subplots(figsize=(8, 4.5))
        for result in results:
            users = sorted(result.rows)
            series = [values(result.rows[u]) for u in users]
            suffix = " avg" if len(series[0]) > 1 else ""
            axes.plot(users, [s[0] for s in series], marker="o", label=result.label + suffix)
            if len(series[0]) > 1:
                axes.plot(users, [s[1] for s in series], marker="x", linestyle="--", label=result.label + " P95")
        axes.set(title=title, xlabel="concurrent users", ylabel=ylabel)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(out / name, dpi=110)
        plt.close(figure)
        paths.append(out / name)
    return paths


def render(results: list[ResultSet], prices: dict[str, float], slo_p95_ms: float) -> str:
    user_counts = sorted({users for r in results for users in r.rows} - {1})
    sections = ["# Load-test report", "## Conditions", conditions(results),
                "## Single request (1 user)", users_table(results, 1)]
    for users in user_counts:
        sections += [f"## {users} concurrent users", users_table(results, users)]
    sections += ["## Throughput and where the time goes", throughput_table(results),
                 f"## Recommendation (P95 ≤ {slo_p95_ms:.0f} ms, success ≥ {MIN_SUCCESS:.1%}; prices editable in "
                 f"loadtest/prices.json)", recommendation_matrix(results, prices, slo_p95_ms),
                 "![latency](latency_vs_users.png)\n\n![throughput](throughput_vs_users.png)"]
    return "\n\n".join(sections) + "\n"


def load_prices(path: Path) -> dict[str, float]:
    return {key: float(value) for key, value in json.loads(path.read_text(encoding="utf-8"))["usd_per_hour"].items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="results folders written by loadtest.run")
    parser.add_argument("--out", type=Path, default=None, help="where report.md and the plots go "
                        "(default: the folder itself when there is one, else loadtest/results/report)")
    parser.add_argument("--prices", type=Path, default=DEFAULT_PRICES)
    parser.add_argument("--slo-p95-ms", type=float, default=200.0)
    args = parser.parse_args(argv)
    try:
        results = [read_results(folder) for folder in args.folders]
        prices = load_prices(args.prices)
    except (OSError, ValueError, KeyError) as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    out = args.out or (args.folders[0] if len(args.folders) == 1 else Path(__file__).resolve().parent
                       / "results" / "report")
    markdown = render(results, prices, args.slo_p95_ms)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text(markdown, encoding="utf-8")
        plot(results, out)
    except OSError as exc:
        print(f"report: --out {out}: {exc}", file=sys.stderr)
        return 2
    print(markdown)
    print(f"[report] wrote {out / 'report.md'} and plots", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
