"""`make bench` in miniature against real local servers: every level's answers checked, the raw encoder ceiling
measured in the same run; and its presets, whose variants are served side by side: the label cache off and on
(the session's MiniLM repositories), the ensemble's overhead (a tiny StructBERT exported twice)."""

from __future__ import annotations

import json

import pytest

from loadtest.bench import main as bench_main

QUICK = ["--duration-s", "1.5", "--warmup-s", "0.5"]


def results_of(tmp_path) -> dict:
    [folder] = tmp_path.iterdir()
    return json.loads((folder / "results.json").read_text())


def test_bench_sweep_reports_latency_throughput_and_the_encoder_ceiling(structbert, tmp_path, capsys):
    server = structbert.server
    code = bench_main(["--grpc-url", server.grpc_url, "--http-url", server.http_url,
                       "--metrics-url", f"http://127.0.0.1:{server.metrics_port}/metrics",
                       "--concurrency", "1,4", "--duration-s", "2", "--warmup-s", "0.5", "--ceiling-s", "2",
                       "--out", str(tmp_path), "--note", "random weights"])
    assert code == 0, capsys.readouterr().err
    results = results_of(tmp_path)
    assert results["meta"]["runtime"] == "python-ort" and results["meta"]["max_length"] == "64"
    assert results["meta"]["note"] == "random weights" and results["meta"]["variants"] == {}
    assert [level["concurrency"] for level in results["levels"]] == [1, 4]
    for level in results["levels"]:
        assert level["requests"] > 3 and level["wrong"] == 0 and not level["errors"]
        assert level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
        assert level["pairs_per_s"] > level["requests_per_s"] > 0
        assert 0 < level["host_share"] < 1 and level["encoder_avg_batch"] >= 1
        assert level["cache_hit_share"] == 0  # distinct requests
    [ceiling] = results["encoder_ceilings"].values()
    buckets = json.loads((structbert.repository / "encoder" / "export.json").read_text())["buckets"]
    assert ceiling["pairs_per_s"] > 0 and ceiling["rows"] >= 3 and ceiling["sequence"] in buckets
    # the default queue budget outlasts the dynamic batcher's 500 ms stalls: a closed loop is never refused
    assert ceiling["refused"] == 0, ceiling["refusals"]
    assert ceiling["p50_ms"] <= ceiling["max_ms"] and ceiling["stalls"] <= ceiling["requests"]


def test_the_label_cache_preset_measures_off_and_on_in_one_run(embedding, embedding_uncached, tmp_path, capsys):
    code = bench_main(["--preset", "label-cache", "--served", f"off={embedding_uncached.repository}",
                       "--served", f"on={embedding.repository}", "--concurrency", "2", *QUICK, "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    results = results_of(tmp_path)
    rows = {(row["case"], row["variant"]): row for row in results["levels"]}
    cases = ["5 labels, fixed set", "5 labels, half with a fresh label", "10 labels, fixed set",
             "10 labels, half with a fresh label"]
    assert list(rows) == [(case, variant) for case in cases for variant in ("off", "on")]
    assert results["encoder_ceilings"] == {}  # the preset skips it
    for row in rows.values():
        assert row["requests"] > 2 and row["wrong"] == 0 and not row["errors"]
        assert row["cache_hit_share"] == 0  # distinct texts: the models answered every request
    for labels in (5, 10):
        fixed, mixed = f"{labels} labels, fixed set", f"{labels} labels, half with a fresh label"
        assert rows[fixed, "off"]["encoder_rows_per_request"] == pytest.approx(1 + labels)  # text + hypotheses
        assert rows[fixed, "off"]["label_cache"] is None
        # fixed set: the texts alone went to the encoder; half with a fresh label: one more row every second one
        assert rows[fixed, "on"]["encoder_rows_per_request"] == pytest.approx(1.0)
        assert rows[fixed, "on"]["label_cache"]["hit_share"] == 1.0
        assert rows[mixed, "on"]["encoder_rows_per_request"] == pytest.approx(1.5, abs=0.1)
        assert rows[mixed, "on"]["label_cache"]["hit_share"] == pytest.approx(1 - 0.5 / labels, abs=0.02)
    assert results["meta"]["variants"] == {"off": str(embedding_uncached.repository), "on": str(embedding.repository)}
    table = (next(tmp_path.iterdir()) / "results.md").read_text()
    assert "Against off" in table and "| on | 10 labels, fixed set | 2 |" in table


def test_the_overhead_preset_exports_its_variants_and_measures_each_at_its_own_levels(tmp_path, capsys):
    code = bench_main(["--preset", "overhead", *QUICK, "--ceiling-s", "1", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    results = results_of(tmp_path)
    assert [(row["variant"], row["concurrency"]) for row in results["levels"]] == [
        ("floor", 1), ("ceiling", 16), ("ceiling", 32)]
    assert all(row["wrong"] == 0 and not row["errors"] and row["requests"] > 0 for row in results["levels"])
    served = results["meta"]["served"]
    assert {info["runtime"] for info in served.values()} == {"python-ort"}
    assert results["meta"]["variants"] == {"floor": "--queue-delay-us 500", "ceiling": "the defaults"}
    assert set(results["encoder_ceilings"]) == {"floor", "ceiling"}
    assert results["encoder_ceilings"]["floor"]["concurrency"] == 1
    table = (next(tmp_path.iterdir()) / "results.md").read_text()
    assert "Against floor" not in table  # no level in common: no ratios
