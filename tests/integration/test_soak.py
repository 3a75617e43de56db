"""`make soak` in miniature against the real local server: 1.5x its measured capacity, open loop, every
request accounted for, memory sampled, the report carrying its conditions."""

from __future__ import annotations

import json

from loadtest.soak import main as soak_main
from loadtest.soak_report import ACCEPTED_P95_CEILING_MS, RECOVERY_S, REFUSAL_P95_MS


def run_soak(server, tmp_path, name: str, *flags: str, grpc_url: str = "") -> int:
    """A short soak of the test server with the flags every test here shares; its report in tmp_path/name."""
    return soak_main(["--grpc-url", grpc_url or server.grpc_url, "--http-url", server.http_url,
                      "--metrics-url", f"http://127.0.0.1:{server.metrics_port}/metrics", "--warmup-s", "1",
                      "--capacity-s", "3", "--capacity-concurrency", "8", "--timeout-s", "20", *flags,
                      "--out", str(tmp_path), "--name", name])


def test_soak_overload_loses_and_mixes_up_nothing(structbert, tmp_path, capsys):
    server = structbert.server
    code = run_soak(server, tmp_path, "soak", "--duration-s", "8", "--load", "1.5", "--sample-s", "0.5")
    out = capsys.readouterr()
    assert code == 0, out.err + out.out
    report = json.loads((tmp_path / "soak" / "report.json").read_text())
    soak = report["soak"]
    assert soak["mismatched"] == 0 and soak["lost"] == 0 and soak["failed"] == 0, soak["examples"]
    assert soak["sent"] == soak["correct"] + soak["rejected"] + soak["failed"] + soak["mismatched"] + soak["lost"]
    assert soak["correct"] > 0 and soak["latency_ms"]["p50"] <= soak["latency_ms"]["p99"]
    assert sum(row["sent"] for row in soak["timeline"]) == soak["sent"]
    capacity = report["capacity"]["requests_per_s"]
    assert capacity > 0 and soak["rates"]["offered_per_s"] == round(1.5 * capacity, 2)
    assert soak["rates"]["achieved_send_per_s"] > 0.5 * soak["rates"]["offered_per_s"]
    # the tritonserver process was found by its gRPC port, its stubs counted with it
    assert report["meta"]["server_pid"] == server.process.pid
    memory = report["memory"]
    assert memory["sampled"] and memory["samples"] >= 10 and memory["max_mib"] > 100
    assert not memory["events"], memory["events"]  # no stub died or was replaced
    assert report["server"]["answer"] == "correct" and report["server"]["answered_after_s"] < 5
    assert report["server"]["live"] and report["server"]["ready"] and not report["server"]["crashed"]
    assert report["meta"]["runtime"] == "python-ort" and report["meta"]["queue_policy"]
    table = (tmp_path / "soak" / "report.md").read_text()
    assert "PASSED" in table and "python-ort, fp32, max_length 64" in table and "| lost | 0 |" in table
    assert "mismatched, 0 lost" in out.out


def test_soak_with_a_burst_reports_the_goals_and_the_recovery(structbert, tmp_path, capsys):
    server = structbert.server
    code = run_soak(server, tmp_path, "burst", "--unloaded-s", "2", "--duration-s", "5", "--load", "1.0",
                    "--burst-load", "4", "--burst-s", "3", "--after-load", "0.3", "--after-s", "6",
                    "--client-cpus", "0")
    out = capsys.readouterr()
    assert code == 0, out.err + out.out
    report = json.loads((tmp_path / "burst" / "report.json").read_text())
    assert [phase[1] for phase in report["soak"]["rates"]["phases"]] == [5, 3, 6]
    assert report["unloaded"]["requests"] > 0 and report["unloaded"]["p50_ms"] <= report["unloaded"]["p95_ms"]
    goals = report["goals"]
    assert 0 < goals["goodput_share"] and goals["unloaded_p95_ms"] == report["unloaded"]["p95_ms"]
    # the capacity point's latency beside the unloaded one: the closed loop's p95 at its best level
    capacity = report["capacity"]
    assert 0 < capacity["p50_ms"] <= capacity["p95_ms"] == goals["capacity_p95_ms"]
    # each verdict follows from the figures beside it, by the goals the report states
    assert goals["goodput_met"] == (goals["goodput_share"] >= 0.9)
    assert goals["capacity_latency_met"] == (goals["accepted_p95_ms"] is not None and goals["accepted_p95_ms"]
                                             <= min(3 * goals["capacity_p95_ms"], ACCEPTED_P95_CEILING_MS))
    assert goals["recovery_met"] == (goals["recovered_after_s"] is not None
                                     and goals["recovered_after_s"] <= RECOVERY_S)
    assert goals["recovery_bound_ms"] == goals["accepted_p95_ms"]  # back to the steady phase's latency
    assert 0 < goals["burst_goodput_share"] and goals["burst_goodput_met"] == (goals["burst_goodput_share"] >= 0.9)
    # how fast refusals came back, when there were any (a burst of 4x usually has some)
    refusals = report["soak"]["refusal_latency_ms"]
    assert (refusals["p95"] is None) == (report["soak"]["rejected"] == 0)
    assert goals["refusal_p95_ms"] == refusals["p95"]
    assert goals["refusal_met"] == (refusals["p95"] is None or refusals["p95"] <= REFUSAL_P95_MS)
    assert report["problems"] == []  # the verdict: nothing lost, mixed up or failed; the server up after
    assert report["meta"]["load_generator"].startswith("one asyncio process on the same host, cores 0;")
    assert report["meta"]["admission"]["admission_budget_ms"]  # as served
    table = (tmp_path / "burst" / "report.md").read_text()
    assert "Goals (steady phase):" in table and "after the burst, per-second medians back under" in table


def test_soak_over_http_accounts_for_every_request_the_same_way(structbert, tmp_path, capsys):
    """--protocol http: the same phases and buckets, the load sent as KServe v2 JSON to --http-url (the gRPC
    address given is closed, so nothing of it went over gRPC)."""
    server = structbert.server
    code = run_soak(server, tmp_path, "http", "--protocol", "http", "--unloaded-s", "1", "--duration-s", "5",
                    "--load", "2", grpc_url="127.0.0.1:1")
    out = capsys.readouterr()
    assert code == 0, out.err + out.out
    report = json.loads((tmp_path / "http" / "report.json").read_text())
    soak = report["soak"]
    assert soak["mismatched"] == 0 and soak["lost"] == 0 and soak["failed"] == 0, soak["examples"]
    assert soak["sent"] == soak["correct"] + soak["rejected"] and soak["correct"] > 0
    assert report["meta"]["protocol"] == "http" and report["server"]["answer"] == "correct"
    # the requests reached the ensemble: Triton counted at least the correct answers
    assert report["triton_counters"]["zero_shot"]["requests"] >= soak["correct"]
    assert "one async HTTP (KServe v2 JSON) client" in (tmp_path / "http" / "report.md").read_text()
