"""`make perf` in miniature: the real perf_analyzer (make perf-tools) against the
real local server, short windows. Triton's own counters, read here, say whether every request succeeded
and whether the response cache answered any."""

from __future__ import annotations

import csv
import json

import pytest

from loadtest import perf
from loadtest.perf_tools import ToolError, locate
from loadtest.server_metrics import model_deltas, scrape

# short windows that count as stable at once: a miniature measures, it does not wait for a quiet host
QUICK = ["--interval-ms", "500", "--stability-pct", "1000", "--max-trials", "4"]


@pytest.fixture(scope="module")
def perf_analyzer():
    try:
        return locate()
    except ToolError as exc:
        pytest.fail(f"{exc} (make test installs it)")


def server_args(served) -> list[str]:
    server = served.server
    return ["--grpc-url", server.grpc_url, "--http-url", server.http_url,
            "--metrics-url", f"http://127.0.0.1:{server.metrics_port}/metrics", "--admin-key", server.admin_secret]


def ensemble_counts(served) -> dict:
    return scrape(f"http://127.0.0.1:{served.server.metrics_port}/metrics")


def test_perf_sweep_writes_perf_analyzers_csv_and_every_request_succeeds(structbert, perf_analyzer, tmp_path,
                                                                          capsys):
    before = ensemble_counts(structbert)
    code = perf.main([*server_args(structbert), *QUICK, "--concurrency", "1,3", "--min-requests", "1500",
                      "--out", str(tmp_path), "--note", "random weights"])
    assert code == 0, capsys.readouterr().err
    zero_shot = model_deltas(before, ensemble_counts(structbert))["zero_shot"]
    [folder] = tmp_path.iterdir()

    with open(folder / "perf_analyzer.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["Concurrency"]) for row in rows] == [1, 3]
    for row in rows:
        assert float(row["Inferences/Second"]) > 0
        assert 0 < float(row["p50 latency"]) <= float(row["p99 latency"])

    levels = json.loads((folder / "results.json").read_text())["levels"]
    assert zero_shot["failures"] == 0 and zero_shot["cache_hits"] == 0
    assert zero_shot["requests"] == sum(level["sent"] for level in levels)
    for level in levels:
        assert level["failures"] == level["cache_hits"] == level["wrong"] == level["unanswered"] == 0
        assert 0 < level["checked"] <= level["sent"] <= level["distinct_requests"]
        assert level["labels_per_request"] > 1 and level["pairs_per_s"] > level["requests_per_s"]
    table = (folder / "results.md").read_text()
    assert "perf_analyzer 2.51.0" in table and "python-ort, fp32, max_length 64" in table
    assert "every request distinct within the run" in table and "| 3 |" in table
    assert (folder / "perf_analyzer-c3.log").read_text().startswith(str(perf_analyzer.binary))


def test_over_http_a_level_that_ran_out_of_distinct_requests_runs_again_with_more(structbert, perf_analyzer,
                                                                                   tmp_path, capsys):
    before = ensemble_counts(structbert)
    code = perf.main([*server_args(structbert), *QUICK, "--protocol", "http", "--concurrency", "2",
                      "--min-requests", "10", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    zero_shot = model_deltas(before, ensemble_counts(structbert))["zero_shot"]
    [level] = json.loads((next(tmp_path.iterdir()) / "results.json").read_text())["levels"]
    assert level["attempts"] == 2 and not level["ran_out_of_data"]
    assert level["cache_hits"] == 0 and level["wrong"] == 0 and level["checked"] > 0
    assert zero_shot["cache_hits"] > 0  # the first attempt's repeats, answered by the cache


def test_a_failing_request_stops_the_sweep_with_the_servers_error(structbert, perf_analyzer, tmp_path, capsys):
    workload = tmp_path / "empty-texts.json"
    workload.write_text(json.dumps({"texts": [" "] * 3, "label_sets": [["咨询", "投诉"]],
                                    "label_pool": [f"标签{i}" for i in range(12)]}, ensure_ascii=False))
    code = perf.main([*server_args(structbert), *QUICK, "--concurrency", "1,2", "--workload", str(workload),
                      "--min-requests", "50", "--out", str(tmp_path / "results")])
    assert code == 2
    assert "perf_analyzer failed at concurrency 1" in capsys.readouterr().err
    [folder] = (tmp_path / "results").iterdir()
    assert "TEXT: is empty" in (folder / "perf_analyzer-c1.log").read_text()
    assert "Stopped: perf_analyzer failed" in (folder / "results.md").read_text()


def test_perf_without_the_servers_secret_says_how_to_give_it(structbert, perf_analyzer, tmp_path, capsys):
    # the launcher restricts Triton's statistics API, which perf_analyzer reads
    code = perf.main([*server_args(structbert)[:-2], *QUICK, "--concurrency", "1", "--min-requests", "100",
                      "--out", str(tmp_path)])
    assert code == 2 and "--admin-key" in capsys.readouterr().err
