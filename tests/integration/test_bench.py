"""`make bench` in miniature against the real local server: every level's answers checked, the table
carries its conditions, and the raw encoder ceiling is measured in the same run."""

from __future__ import annotations

import json

from loadtest.bench import main as bench_main


def test_bench_sweep_reports_latency_throughput_and_the_encoder_ceiling(structbert, tmp_path, capsys):
    server = structbert.server
    code = bench_main(["--grpc-url", server.grpc_url, "--http-url", server.http_url,
                       "--metrics-url", f"http://127.0.0.1:{server.metrics_port}/metrics",
                       "--concurrency", "1,4", "--duration-s", "2", "--warmup-s", "0.5", "--ceiling-s", "2",
                       "--out", str(tmp_path), "--note", "random weights"])
    assert code == 0, capsys.readouterr().err
    [folder] = tmp_path.iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert [level["concurrency"] for level in results["levels"]] == [1, 4]
    for level in results["levels"]:
        assert level["requests"] > 3 and level["wrong"] == 0 and not level["errors"]
        assert level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
        assert level["pairs_per_s"] > level["requests_per_s"] > 0
        assert 0 < level["host_share"] < 1 and level["encoder_avg_batch"] >= 1
    ceiling = results["encoder_ceiling"]
    buckets = json.loads((structbert.repository / "encoder" / "export.json").read_text())["buckets"]
    assert ceiling["pairs_per_s"] > 0 and ceiling["rows"] >= 3 and ceiling["sequence"] in buckets
    # the default queue budget outlasts the dynamic batcher's 500 ms stalls: a closed loop is never refused
    assert ceiling["refused"] == 0, ceiling["refusals"]
    assert ceiling["p50_ms"] <= ceiling["max_ms"] and ceiling["stalls"] <= ceiling["requests"]
    table = (folder / "results.md").read_text()
    assert "python-ort, fp32, max_length 64" in table and "random weights" in table
    assert "| 4 |" in table and "Raw encoder ceiling" in table and "Raw encoder latency" in table
