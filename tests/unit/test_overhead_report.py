"""The overhead report's figures from bench results (loadtest.overhead); the bench itself runs against a
real server in tests/integration/test_bench.py."""

from __future__ import annotations

from loadtest.overhead import ceiling_figures, floor_figures, markdown


def level(concurrency: int, p50: float, rps: float, encoder_queue: float, cpu_total: float) -> dict:
    cpu = {"tritonserver": cpu_total / 4, "preprocess": cpu_total / 4, "encoder": cpu_total / 4,
           "postprocess": cpu_total / 4, "total": cpu_total}
    return {"concurrency": concurrency, "p50_ms": p50, "p95_ms": p50 * 1.5, "p99_ms": p50 * 2,
            "requests_per_s": rps, "queue_ms": {"preprocess": 0.0, "encoder": encoder_queue, "postprocess": 0.0},
            "server_cpu_ms": cpu, "client_cpu_ms": 0.5, "errors": {}, "wrong": 0}


def test_floor_takes_out_the_queue_wait_and_the_ceiling_is_the_best_level():
    floor = floor_figures({"levels": [level(1, 2.4, 400, 0.6, 2.0)],
                           "encoder_ceiling": {"rows": 6, "pairs_per_s": 6000.0}})
    assert floor["p50_without_queue_delay_ms"] == 2.4 - 0.6
    assert floor["encoder_alone_ms"] == 1.0  # 6 pairs per request at 6000 pairs/s, one at a time
    ceiling = ceiling_figures({"levels": [level(8, 9.0, 850, 1.8, 2.0), level(16, 20.0, 800, 2.0, 2.1)]})
    assert ceiling["concurrency"] == 8 and ceiling["requests_per_s_per_server_core"] == 500
    meta = {"started": "now", "hardware": "CPU X (2 cores)", "workload": "workload.json", "mean_labels": 6.0,
            "duration_s": 20, "ceiling_levels": "8,16", "floor_folder": "a", "ceiling_folder": "b"}
    report = markdown(meta, floor, ceiling)
    assert "Goal p50 ≤ 2.5 ms: met." in report and "requests/s per server core" in report
    assert ": met." in report.split("## Ceiling")[1]
    slow = markdown(meta, floor | {"p50_ms": 3.0}, ceiling | {"requests_per_s": 600})
    assert "Goal p50 ≤ 2.5 ms: missed." in slow and slow.split("## Ceiling")[1].count("missed") == 1


def test_a_measured_earlier_version_is_the_goals_baseline(tmp_path):
    import json

    from loadtest.overhead import before_figures

    old = tmp_path / "old.json"
    old.write_text(json.dumps({"levels": [level(1, 4.0, 200, 0.5, 3.0), level(16, 30.0, 400, 10.0, 3.0)]}))
    before = before_figures([old])
    assert (before["p50_ms"], before["requests_per_s"], before["concurrency"]) == (4.0, 400, 16)
    meta = {"started": "now", "hardware": "CPU X (2 cores)", "workload": "workload.json", "mean_labels": 6.0,
            "duration_s": 20, "ceiling_levels": "16,32", "floor_folder": "a", "ceiling_folder": "b",
            "before_note": "commit abc"}
    floor = {"p50_ms": 5.0, "p95_ms": 6.0, "encoder_queue_ms": 0.5, "p50_without_queue_delay_ms": 4.5,
             "encoder_alone_ms": 3.0, "server_cpu_ms": {"total": 3.0}, "client_cpu_ms": 1.0}
    ceiling = {"concurrency": 32, "requests_per_s": 820.0, "p50_ms": 30.0, "p99_ms": 50.0,
               "server_cpu_ms": {"total": 1.8}, "requests_per_s_per_server_core": 555, "client_cpu_ms": 0.5,
               "errors": 0, "wrong": 0}
    report = markdown(meta, floor, ceiling, before)
    assert "Goal ≥ 2 × 400 requests/s (the ensemble before this work, measured beside it): met." in report
    assert "Before (the earlier version, same machine, commit abc)" in report and "2.05x the requests/s" in report
