"""`make bench-label-cache` in miniature: both settings served side by side from the session's MiniLM
repositories (cache on: the default export; off: --label-cache-mb 0), every case measured, every answer
checked, and the figures that say what the cache did: the encoder's rows per request and the hit share."""

from __future__ import annotations

import json

import pytest

from loadtest.label_cache_bench import main as label_cache_bench


def test_the_label_cache_bench_measures_off_and_on_in_one_run(embedding, embedding_uncached, tmp_path, capsys):
    code = label_cache_bench(["--repository-off", str(embedding_uncached.repository),
                              "--repository-on", str(embedding.repository), "--label-counts", "5",
                              "--concurrency", "2", "--duration-s", "1.5", "--warmup-s", "0.5", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    [folder] = tmp_path.iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert [case["case"] for case in results["cases"]] == ["5 labels, fixed set", "5 labels, half with a fresh label"]
    assert results["meta"]["response_cache_hits"] == 0  # distinct texts: the models answered every request
    fixed, mixed = results["cases"]
    for case in (fixed, mixed):
        for setting in ("off", "on"):
            row = case[setting]
            assert row["requests"] > 2 and row["wrong"] == 0 and not row["errors"]
            assert row["p50_ms"] <= row["p95_ms"]
        assert case["off"]["encoder_rows_per_request"] == pytest.approx(6.0)  # the text + 5 hypotheses
        assert case["off"]["label_cache"] is None
    # fixed set: the texts alone went to the encoder; half with a fresh label: one more row every second request
    assert fixed["on"]["encoder_rows_per_request"] == pytest.approx(1.0)
    assert fixed["on"]["label_cache"]["hit_share"] == 1.0
    assert mixed["on"]["encoder_rows_per_request"] == pytest.approx(1.5, abs=0.2)
    assert mixed["on"]["label_cache"]["hit_share"] == pytest.approx(0.9, abs=0.03)
    report = (folder / "results.md").read_text()
    assert "offline-minilm (embedding mode)" in report and "32 MiB per preprocess instance, 2 instances" in report
    assert "| 5 labels, fixed set |" in report and "req/s on/off" in report
