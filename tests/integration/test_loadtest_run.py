"""A short headless Locust run (seconds) through `python -m loadtest.run` against the real local
tritonserver, over both protocols: zero failures (every answer checked against its request), Triton's
counters collected, and a well-formed report."""

from __future__ import annotations

import csv
import json

import pytest

from loadtest.run import main as loadtest_main


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_short_locust_run_has_no_failures_and_a_report(structbert, protocol, tmp_path):
    server = structbert.server
    code = loadtest_main([
        "--host", f"http://{server.http_url}", "--grpc-url", server.grpc_url,
        "--metrics-url", f"http://127.0.0.1:{server.metrics_port}/metrics",
        "--protocol", protocol, "--users", "1,3", "--duration", "3s", "--label-mode", "fresh",
        "--out", str(tmp_path), "--name", "run", "--report",
    ])
    assert code == 0
    folder = tmp_path / "run"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["runtime"] == "python-ort" and meta["precision"] == "fp32" and meta["mode"] == "nli"
    for users in (1, 3):
        with open(folder / f"u{users}_stats.csv", newline="") as handle:
            [aggregated] = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]
        assert int(aggregated["Request Count"]) > 5
        assert int(aggregated["Failure Count"]) == 0, (folder / f"u{users}_failures.csv").read_text()
        models = json.loads((folder / f"u{users}_server.json").read_text())["models"]
        # the ensemble counts every answer, cached ones included (the encoder sees only cache misses)
        assert models["zero_shot"]["requests"] >= int(aggregated["Request Count"])
        assert models["encoder"]["failures"] == 0 and models["zero_shot"]["failures"] == 0
    markdown = (folder / "report.md").read_text()
    assert "## Single request (1 user)" in markdown and "## 3 concurrent users" in markdown
    assert (folder / "latency_vs_users.png").read_bytes().startswith(b"\x89PNG")


def test_unreachable_server_is_a_clear_error(tmp_path, capsys):
    from zsc_server.triton_process import free_ports

    [port] = free_ports(1)
    code = loadtest_main(["--host", f"http://127.0.0.1:{port}", "--metrics-url", "none", "--users", "1",
                          "--duration", "1s", "--out", str(tmp_path)])
    assert code == 2
    assert "Is the server running" in capsys.readouterr().err


def test_distinct_requests_reach_no_cache_and_repeats_are_counted(structbert, tmp_path):
    """The cache counters come from the real server: distinct requests (the default) get no cache hit;
    the workload's repeats (one label set, 48 texts) do, and the report says how many."""
    server = structbert.server
    common = ["--host", f"http://{server.http_url}", "--metrics-url",
              f"http://127.0.0.1:{server.metrics_port}/metrics", "--protocol", "http", "--users", "2",
              "--duration", "4s", "--label-mode", "fixed", "--out", str(tmp_path)]
    assert loadtest_main([*common, "--name", "distinct"]) == 0
    assert loadtest_main([*common, "--name", "repeats", "--no-distinct", "--report"]) == 0
    distinct, repeats = (json.loads((tmp_path / name / "u2_server.json").read_text())["models"]["zero_shot"]
                         for name in ("distinct", "repeats"))
    assert distinct["cache_hits"] == 0 and distinct["cache_misses"] >= distinct["requests"] > 5
    assert repeats["cache_hits"] > 0
    assert json.loads((tmp_path / "distinct" / "meta.json").read_text())["distinct"] is True
    markdown = (tmp_path / "repeats" / "report.md").read_text()
    assert "repeating (cache may answer)" in markdown and f"{repeats['cache_hits']:,.0f} (" in markdown


def test_locust_alone_checks_scores_as_the_served_model_gives_them(embedding, tmp_path):
    """Locust as compose's `locust` service runs it, with no --score-kind: the scenario reads the served
    ensemble's config, so an embedding model's cosine scores (which need not sum to 1, and may be negative)
    are checked as cosines, not failed as probabilities."""
    import subprocess
    import sys

    from loadtest.run import LOCUSTFILE

    server = embedding.server
    done = subprocess.run([
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "2", "-r", "2", "-t", "4s",
        "--only-summary", "--host", f"http://{server.http_url}", "--grpc-url", server.grpc_url, "--distinct",
        "--label-mode", "sets", "--csv", str(tmp_path / "run"), "TritonGrpcUser", "TritonHttpUser",
    ], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "run_stats.csv", newline="") as handle:
        [aggregated] = [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]
    assert int(aggregated["Request Count"]) > 5 and int(aggregated["Failure Count"]) == 0
