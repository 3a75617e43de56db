"""The load-test building blocks without a server: workload sampling, answer checks, Triton metrics
parsing, and the report built from Locust CSVs written here with known numbers."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from loadtest import report
from loadtest.run import LoadTestError, parse_duration, run_locust
from loadtest.server_metrics import label_cache_summary, model_deltas, parse_prometheus
from loadtest.workload import (
    TAG_BITS,
    TAG_DIGITS,
    ClassifyRequest,
    Workload,
    answer_problem,
    kserve_body,
    parse_mix,
    text_class,
    whitespace_tag,
)

WORKLOAD = Workload.load()


def test_shipped_workload_matches_what_the_benchmarks_promise():
    lengths = [len(text) for text in WORKLOAD.texts]
    assert len(lengths) >= 40 and min(lengths) >= 10 and max(lengths) <= 60
    assert all(3 <= len(labels) <= 10 for labels in WORKLOAD.label_sets)
    assert {text_class(text) for text in WORKLOAD.texts} == {"short", "medium", "long"}


def test_fixed_mode_sends_one_label_set_and_fresh_mode_changes_it():
    fixed = WORKLOAD.sampler("fixed", seed=1)
    assert {fixed.next().labels for _ in range(50)} == {tuple(WORKLOAD.label_sets[0])}
    fresh = WORKLOAD.sampler("fresh", label_mix="4:1", seed=1)
    drawn = [fresh.next().labels for _ in range(50)]
    assert all(len(labels) == 4 and len(set(labels)) == 4 for labels in drawn)
    assert len(set(drawn)) > 40
    assert set().union(*drawn) <= set(WORKLOAD.label_pool)


def test_mixes_select_label_counts_and_text_lengths():
    sampler = WORKLOAD.sampler("sets", label_mix="3:1,10:1", text_mix="long:1", seed=2)
    requests = [sampler.next() for _ in range(200)]
    assert {len(r.labels) for r in requests} == {3, 10}
    assert {text_class(r.text) for r in requests} == {"long"}
    assert WORKLOAD.sampler("fresh", label_mix="3:1,5:1").mean_labels() == pytest.approx(4.0, abs=0.15)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"label_mode": "sometimes"}, "label mode"),
    ({"label_mix": "3"}, "KEY:WEIGHT"),
    ({"label_mix": "3:0"}, "not all zero"),
    ({"label_mix": "2:1"}, "no label set"),
    ({"text_mix": "huge:1"}, "text mix classes"),
    ({"label_mode": "fresh", "label_mix": "500:1"}, "exceeds the pool"),
])
def test_bad_mixes_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WORKLOAD.sampler(**kwargs)


def test_parse_mix():
    assert parse_mix("3:4, 5:2", keys_are_ints=True) == {3: 4.0, 5: 2.0}
    assert parse_mix("", keys_are_ints=False) == {}


def test_answer_checks_catch_answers_to_another_request():
    request = ClassifyRequest("快递没到", ("咨询", "投诉", "建议"))
    assert answer_problem(request, ["投诉", "咨询", "建议"], [0.7, 0.2, 0.1]) is None
    assert "not the request's" in answer_problem(request, ["物流", "咨询", "建议"], [0.7, 0.2, 0.1])
    assert "sorted" in answer_problem(request, ["投诉", "咨询", "建议"], [0.2, 0.7, 0.1])
    assert "sum to" in answer_problem(request, ["投诉", "咨询", "建议"], [0.9, 0.8, 0.1])
    assert "scores for" in answer_problem(request, ["投诉", "咨询", "建议"], [0.9, 0.1])
    multi = ClassifyRequest("快递没到", ("咨询", "投诉"), multi_label=True)
    assert answer_problem(multi, ["投诉", "咨询"], [0.9, 0.8]) is None
    assert answer_problem(request, ["投诉", "咨询", "建议"], [0.4, -0.1, -0.3], "cosine") is None
    assert "sorted" in answer_problem(request, ["投诉", "咨询", "建议"], [0.4, -0.1, -0.3])


def test_kserve_body_names_the_ensemble_inputs():
    body = kserve_body(ClassifyRequest("文本", ("a", "b"), multi_label=True))
    assert [(i["name"], i["shape"]) for i in body["inputs"]] == [
        ("TEXT", [1]), ("CANDIDATE_LABELS", [2]), ("MULTI_LABEL", [1])]


METRICS_BEFORE = """# HELP nv_inference_request_success Number of successful inference requests
nv_inference_request_success{model="encoder",version="1"} 10
nv_inference_queue_duration_us{model="encoder",version="1"} 1000
nv_inference_exec_count{model="encoder",version="1"} 5
nv_inference_count{model="encoder",version="1"} 50
nv_inference_compute_infer_duration_us{model="encoder",version="1"} 20000
"""
METRICS_AFTER = """nv_inference_request_success{model="encoder",version="1"} 110
nv_inference_queue_duration_us{model="encoder",version="1"} 301000
nv_inference_exec_count{model="encoder",version="1"} 25
nv_inference_count{model="encoder",version="1"} 650
nv_inference_compute_infer_duration_us{model="encoder",version="1"} 520000
nv_gpu_memory_used_bytes{gpu_uuid="GPU-1"} 2147483648
"""


def test_triton_counters_become_per_request_averages():
    samples = parse_prometheus(METRICS_AFTER)
    assert ("nv_gpu_memory_used_bytes", {"gpu_uuid": "GPU-1"}, 2147483648.0) in samples
    encoder = model_deltas(parse_prometheus(METRICS_BEFORE), samples)["encoder"]
    assert encoder["requests"] == 100
    assert encoder["avg_queue_ms"] == pytest.approx(3.0)  # 300,000 us over 100 requests
    assert encoder["avg_compute_ms"] == pytest.approx(5.0)
    assert encoder["avg_batch"] == pytest.approx(30.0)  # 600 pairs in 20 executions


def test_label_cache_counters_are_summed_over_the_preprocess_instances():
    before = parse_prometheus('''zsc_label_cache_hits{instance="preprocess_0_0",model="preprocess"} 10
zsc_label_cache_hits{instance="preprocess_0_1",model="preprocess"} 5
zsc_label_cache_misses{instance="preprocess_0_0",model="preprocess"} 6
''')
    after = parse_prometheus('''zsc_label_cache_hits{instance="preprocess_0_0",model="preprocess"} 100
zsc_label_cache_hits{instance="preprocess_0_1",model="preprocess"} 95
zsc_label_cache_misses{instance="preprocess_0_0",model="preprocess"} 16
zsc_label_cache_misses{instance="preprocess_0_1",model="preprocess"} 10
zsc_label_cache_evictions{instance="preprocess_0_0",model="preprocess"} 2
zsc_label_cache_bytes{instance="preprocess_0_0",model="preprocess"} 1048576
zsc_label_cache_bytes{instance="preprocess_0_1",model="preprocess"} 1048576
zsc_label_cache_entries{instance="preprocess_0_0",model="preprocess"} 600
zsc_label_cache_entries{instance="preprocess_0_1",model="preprocess"} 590
zsc_label_cache_budget_bytes{instance="preprocess_0_0",model="preprocess"} 33554432
zsc_label_cache_budget_bytes{instance="preprocess_0_1",model="preprocess"} 33554432
''')
    summary = label_cache_summary(model_deltas(before, after), after)
    assert summary == {"hits": 180, "misses": 20, "evictions": 2, "hit_share": 0.9, "bytes": 2097152,
                       "entries": 1190, "budget_bytes": 67108864}
    # an export without the cache (NLI, or --label-cache-mb 0) has no such series
    assert label_cache_summary(model_deltas(parse_prometheus(METRICS_BEFORE), parse_prometheus(METRICS_AFTER)),
                               parse_prometheus(METRICS_AFTER)) is None


STATS_HEADER = ("Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
                "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,"
                "99.9%,99.99%,100%")


def write_results(folder: Path, hardware: str, runs: dict[int, tuple[int, int, float, float, float]],
                  memory_mb: float | None = None) -> Path:
    """runs: users -> (requests, failures, avg ms, p95 ms, requests/s), as Locust's CSV writes them."""
    folder.mkdir(parents=True)
    meta = {"target": "triton-grpc", "protocol": "grpc", "hardware": hardware, "model": "structbert-large",
            "precision": "fp16", "runtime": "python-torch", "max_length": "128", "users": sorted(runs),
            "duration": "60s", "label_mode": "sets", "mean_labels": 5.0, "started": "2026-11-25T00:00:00+00:00"}
    (folder / "meta.json").write_text(json.dumps(meta))
    for users, (requests, failures, avg, p95, rps) in runs.items():
        percentiles = ",".join(str(p95 if i >= 5 else avg) for i in range(11))
        row = f"{requests},{failures},{avg},{avg},1,{p95 * 2},100,{rps},0,{percentiles}"
        (folder / f"u{users}_stats.csv").write_text(
            f"{STATS_HEADER}\ngrpc,zero_shot [grpc],{row}\n,Aggregated,{row}\n")
        server = {"models": {"encoder": {"requests": requests, "avg_queue_ms": 1.5, "avg_compute_ms": 4.0,
                                         "avg_batch": 12.0}},
                  "nvidia_smi": {"memory_used_mb_max": memory_mb} if memory_mb else {}}
        (folder / f"u{users}_server.json").write_text(json.dumps(server))
    return folder


@pytest.fixture
def two_gpus(tmp_path) -> list[report.ResultSet]:
    h100 = write_results(tmp_path / "h100", "1x NVIDIA H100 80GB HBM3",
                         {1: (3000, 0, 6.0, 8.0, 50.0), 10: (24000, 0, 25.0, 30.0, 400.0)}, memory_mb=2048)
    t4 = write_results(tmp_path / "t4", "1x Tesla T4",
                       {1: (600, 0, 90.0, 120.0, 10.0), 10: (3600, 36, 160.0, 250.0, 60.0)})
    return [report.read_results(h100), report.read_results(t4)]


def test_report_reads_locust_csv_and_server_counters(two_gpus):
    h100, t4 = two_gpus
    assert h100.rows[10].rps == 400.0 and h100.rows[10].pairs_per_s == 2000.0
    assert h100.rows[1].gpu_memory_mb == 2048 and h100.rows[10].encoder_batch == 12.0
    assert t4.rows[10].success_rate == pytest.approx(0.99)
    assert t4.rows[10].pairs_per_s == pytest.approx(60 * 5 * 0.99)  # failed requests scored nothing


def test_report_tables_and_recommendation(two_gpus, tmp_path):
    prices = {"H100": 4.0, "T4": 0.5}
    markdown = report.render(two_gpus, prices, slo_p95_ms=200.0)
    for section in ("## Conditions", "## Single request (1 user)", "## 10 concurrent users",
                    "## Throughput", "## Recommendation"):
        assert section in markdown
    h100_label, t4_label = (result.label for result in two_gpus)
    assert f"| {h100_label} | 6.0 | 8.0 | 2.0 GiB | 100.00% |" in markdown
    assert f"| {t4_label} | 160.0 | 250.0 | 99.00% | 60.0 |" in markdown
    # T4 meets P95 <= 200 ms only at 1 user (10 req/s): 10 req/s -> 1 T4 ($0.50) beats 1 H100 ($4)
    assert f"| 10 | 1× = $4.00/h | 1× = $0.50/h | {t4_label} |" in markdown
    # 100 req/s -> 1 H100 ($4) vs 10 T4s ($5)
    assert f"| 100 | 1× = $4.00/h | 10× = $5.00/h | {h100_label} |" in markdown
    paths = report.plot(two_gpus, tmp_path)
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in paths)


def test_report_cli_writes_into_the_folder(two_gpus, tmp_path, capsys):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"usd_per_hour": {"H100": 4.0}}))
    assert report.main([str(two_gpus[0].folder), "--prices", str(prices)]) == 0
    assert (two_gpus[0].folder / "report.md").read_text().startswith("# Load-test report")
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "not a results folder" in capsys.readouterr().err


def test_sampling_is_reproducible_per_seed():
    first = [WORKLOAD.sampler("fresh", seed=7).next() for _ in range(3)]
    assert first[0] == first[1] == first[2]
    assert WORKLOAD.sampler("fresh", seed=8).next() != first[0]


@pytest.mark.parametrize(("spec", "seconds"), [("90", 90), ("30s", 30), ("2m", 120), ("1h30m", 5400), ("1m5s", 65)])
def test_durations_in_locust_syntax(spec, seconds):
    assert parse_duration(spec) == seconds


@pytest.mark.parametrize("spec", ["", "30x", "1.5m", "s", "10s5", "0s", "0"])  # Locust reads 0 as no limit
def test_bad_durations_are_refused(spec):
    with pytest.raises(LoadTestError, match="--duration"):
        parse_duration(spec)


def test_a_hung_load_generator_is_killed_and_reported():
    # stands in for a Locust process stuck at exit: it ignores SIGTERM, as a hung Locust did
    stuck = [sys.executable, "-c", f"import signal, sys, time; signal.signal({int(signal.SIGTERM)}, signal.SIG_IGN); "
             "print('stuck', file=sys.stderr, flush=True); time.sleep(60)"]
    started = time.monotonic()
    with pytest.raises(LoadTestError, match="did not exit within 2 s") as caught:
        run_locust(stuck, {}, deadline_s=2)
    assert time.monotonic() - started < 10
    assert "stuck" in str(caught.value)


def test_soak_phases_recovery_and_core_lists():
    from loadtest.driver import rate_at
    from loadtest.soak_report import recovery_s
    from zsc_server.arguments import cpu_list

    phases = [(10.0, 5.0), (50.0, 2.0), (5.0, 3.0)]
    assert [rate_at(phases, t) for t in (0, 4.9, 5.0, 6.9, 7.0, 99)] == [10, 10, 50, 50, 5, 5]
    per_second = {7: [90.0], 8: [40.0], 9: [80.0], 10: [20.0, 30.0], 11: [25.0]}
    assert recovery_s(per_second, 7.0, 12.0, 50.0) == 3.0  # 9 s was still slow: recovered from 10 s on
    assert recovery_s({7: [90.0]}, 7.0, 12.0, 50.0) is None
    assert cpu_list("0") == {0} and cpu_list("1,3-4") == {1, 3, 4}


def test_a_burst_is_judged_by_what_was_answered_while_it_was_offered():
    from loadtest.soak_report import goals

    report = {"capacity": {"requests_per_s": 100.0, "p95_ms": 50.0}, "soak": {}}
    phases = [(50.0, 2.0), (500.0, 2.0), (50.0, 2.0)]  # half the capacity, five times, half
    per_second = {0: [20.0] * 50, 1: [20.0] * 50, 2: [90.0] * 80, 3: [90.0] * 60, 4: [20.0] * 50, 5: [20.0] * 50}
    result = goals(report, phases, per_second)
    assert result["goodput_share"] == 1.0 and result["goodput_met"]  # the first phase: all of its half load
    assert result["burst_goodput_share"] == 0.7 and not result["burst_goodput_met"]  # 140 in 2 s of 100/s
    assert result["recovered_after_s"] == 0.0


def test_a_given_capacity_judges_accepted_latency_by_the_ceiling_alone():
    from loadtest.soak_report import ACCEPTED_P95_CEILING_MS, goals

    report = {"capacity": {"requests_per_s": 100.0, "given": True}, "soak": {}}  # --capacity: no p95 measured
    for latency_ms, met in ((0.9 * ACCEPTED_P95_CEILING_MS, True), (1.1 * ACCEPTED_P95_CEILING_MS, False)):
        result = goals(report, [(200.0, 2.0)], {0: [latency_ms] * 100, 1: [latency_ms] * 100})
        assert result["capacity_latency_met"] is met and result["capacity_p95_ms"] is None


def test_distinct_requests_differ_in_bytes_but_not_in_what_is_drawn():
    plain = WORKLOAD.sampler("sets", seed=3)
    distinct = WORKLOAD.sampler("sets", seed=3, distinct=True)
    pairs = [(plain.next(), distinct.next()) for _ in range(500)]
    # the workload's draws (texts, labels) are unchanged; only the tag is added
    assert all(tagged.text.rstrip(" \t\n\r") == request.text and tagged.labels == request.labels
               for request, tagged in pairs)
    assert all(len(tagged.text) == len(request.text) + TAG_BITS // 2 for request, tagged in pairs)
    assert len({tagged.text for _, tagged in pairs}) == 500  # no two alike, although texts repeat
    assert len({request.text for request, _ in pairs}) <= len(WORKLOAD.texts)
    # two samplers with one seed (two Locust processes) still send different tags
    again = WORKLOAD.sampler("sets", seed=3, distinct=True)
    assert {again.next().text for _ in range(500)}.isdisjoint(tagged.text for _, tagged in pairs)


def test_whitespace_tags_are_fixed_width_and_one_to_one():
    assert whitespace_tag(0) == " " * 32 and whitespace_tag(2**64 - 1) == "\r" * 32
    tags = {whitespace_tag(n) for n in range(4096)}
    assert len(tags) == 4096 and all(set(tag) <= set(TAG_DIGITS) and len(tag) == 32 for tag in tags)


def test_tags_leave_the_tokens_unchanged_for_ours_and_the_baselines_tokenizer(tmp_path):
    """What makes distinct requests a fair comparison: the tag costs no token on either side."""
    from transformers import BertTokenizer

    from export.random_checkpoint import write_vocab
    from export.tokenizer import TokenizerFacts, write_tokenizer_json
    from zsc_server.tokenization import PairTokenizer

    write_vocab(tmp_path / "vocab.txt")
    write_tokenizer_json(tmp_path, TokenizerFacts(lowercase=True), destination=tmp_path / "tokenizer.json")
    ours = PairTokenizer(tmp_path / "tokenizer.json", max_length=128, buckets=(16, 32, 64, 128))
    theirs = BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=True)
    sampler = WORKLOAD.sampler("sets", seed=4, distinct=True)
    for _ in range(40):
        request = sampler.next()
        text = request.text.rstrip(" \t\n\r")
        tagged, untagged = (ours.encode_pairs(t, list(request.labels)) for t in (request.text, text))
        assert np.array_equal(tagged.input_ids, untagged.input_ids)
        assert np.array_equal(tagged.attention_mask, untagged.attention_mask)
        assert theirs(request.text, request.labels[0])["input_ids"] == theirs(text, request.labels[0])["input_ids"]


def test_cache_hits_reach_the_report(two_gpus):
    h100, t4 = two_gpus
    server = json.loads((h100.folder / "u10_server.json").read_text())
    server["models"]["zero_shot"] = {"requests": 24000.0, "cache_hits": 6000.0, "cache_misses": 18000.0}
    (h100.folder / "u10_server.json").write_text(json.dumps(server))
    meta = json.loads((h100.folder / "meta.json").read_text())
    (h100.folder / "meta.json").write_text(json.dumps(dict(meta, distinct=False)))
    h100 = report.read_results(h100.folder)
    assert h100.rows[10].cache_cell() == "6,000 (25.0%)"
    assert t4.rows[10].cache_cell() == "n/a (no cache)"  # a server that is not ours: no counters
    markdown = report.render([h100, t4], {}, 200.0)
    assert "| Answered from cache |" in markdown and "| 6,000 (25.0%) |" in markdown
    assert "repeating (cache may answer)" in markdown and "not recorded" in markdown


def test_cache_counters_are_collected_per_model():
    before = parse_prometheus('nv_cache_num_hits_per_model{model="zero_shot",version="1"} 2\n'
                              'nv_cache_num_misses_per_model{model="zero_shot",version="1"} 5\n')
    after = parse_prometheus('nv_cache_num_hits_per_model{model="zero_shot",version="1"} 12\n'
                             'nv_cache_num_misses_per_model{model="zero_shot",version="1"} 9\n')
    ensemble = model_deltas(before, after)["zero_shot"]
    assert (ensemble["cache_hits"], ensemble["cache_misses"]) == (10, 4)


def compare_results(tmp_path, shape="base"):
    """Results folders as loadtest.compare leaves them: ours at fp32 and int8, one baseline; the exports' facts."""
    import argparse

    def setup(name, precision, runs, cache_hits=None):
        folder = write_results(tmp_path / name, "CPU AMD EPYC (2 cores)", runs)
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps(dict(meta, target=name, precision=precision, distinct=True)))
        for users in runs:
            server = json.loads((folder / f"u{users}_server.json").read_text())
            if cache_hits is None:
                server["models"] = {}  # a Flask baseline: no Triton counters
            else:
                server["models"]["zero_shot"] = {"requests": runs[users][0], "cache_hits": cache_hits}
            (folder / f"u{users}_server.json").write_text(json.dumps(server))
        return report.read_results(folder)

    fp32 = setup("triton-fp32", "fp32", {1: (300, 0, 170.0, 270.0, 5.9), 5: (300, 0, 800.0, 1600.0, 5.0)}, 0)
    int8 = setup("triton-int8", "int8", {1: (900, 0, 60.0, 90.0, 17.7), 5: (900, 0, 280.0, 400.0, 15.0)}, 0)
    theirs = setup("reference-modelscope", "fp32", {1: (260, 0, 190.0, 300.0, 5.2), 5: (280, 0, 870.0, 1200.0, 5.0)})
    gate = {"max_abs_delta": 0.03, "mean_abs_delta": 0.005, "top1_agreement": 1.0, "top1_strict": 0.9,
            "requests": 48, "passed": True}
    info = {"max_length": 128, "runtime": "python-ort", "buckets": [16, 128]}
    exports = {"triton-fp32": info, "triton-int8": dict(info, int8_agreement=gate)}
    args = argparse.Namespace(shape=shape, users="1,5", label_mode="sets", label_mix="", duration="60s",
                              distinct=True)
    return [fp32, int8], [theirs], exports, args


def test_comparison_puts_setups_baselines_cache_counts_and_the_gate_side_by_side(tmp_path):
    from loadtest import compare

    ours, theirs, exports, args = compare_results(tmp_path)
    data = json.loads(json.dumps(compare.summarize(ours, theirs, exports, args)))  # as comparison.json holds it
    against = {(r["ours"], r["users"]): r for r in data["against_baselines"]}
    assert set(against) == {(name, users) for name in ("triton-fp32", "triton-int8") for users in (1, 5)}
    assert against["triton-int8", 5]["throughput_ratio"] == pytest.approx(3.0)  # 15 vs 5 req/s
    assert against["triton-int8", 5]["p95_ratio"] == pytest.approx(3.0)  # 1,200 vs 400 ms
    [int8_at_5] = [r for r in data["against_fp32"] if r["setup"] == "triton-int8" and r["users"] == 5]
    assert (int8_at_5["throughput_ratio"], int8_at_5["p95_ratio"]) == (pytest.approx(3.0), pytest.approx(4.0))
    assert int8_at_5["mean_ratio"] == pytest.approx(800 / 280)
    assert {r["setup"] for r in data["against_fp32"]} == {"triton-int8"}
    int8 = data["setups"]["triton-int8"]
    assert int8["export"]["int8_agreement"]["top1_strict"] == 0.9 and int8["requests"] == "distinct"
    assert int8["levels"]["5"]["cache_hits"] == 0 and int8["levels"]["5"]["success_rate"] == 1.0
    assert data["baselines"]["reference-modelscope"]["levels"]["1"]["cache_hits"] is None  # no cache there
    markdown = compare.render(compare.summarize(ours, theirs, exports, args), ours, theirs)
    assert "## Ours vs reference-modelscope" in markdown and "## Against FP32" in markdown
    assert "| triton-int8 | 5 | 15.0 | 5.0 | 3.00 | 400 | 1,200 | 3.00 |" in markdown
    assert "reference deployment's own figures" not in markdown


def test_large_shape_comparison_shows_the_reference_figures_and_no_baseline(tmp_path):
    from loadtest import compare

    ours, _, exports, args = compare_results(tmp_path, shape="large")
    data = compare.summarize(ours[1:], [], exports, args)
    assert data["baselines"] == {} and data["against_baselines"] == [] and data["against_fp32"] == []
    markdown = compare.render(data, ours[1:], [])
    assert "Baselines: none in this run" in markdown and "## Ours vs" not in markdown
    assert "| reference deployment on a T4 GPU | 180 ms mean, one user |" in markdown
    assert "| ours, triton-int8, CPU AMD EPYC (2 cores) | 60 ms mean, P95 90 ms, one user, 100.0% success |" \
        in markdown


def test_compare_refuses_unknown_setups():
    from loadtest.compare import parse_setups

    assert parse_setups("int8, ov-int8") == ["int8", "ov-int8"]
    for spec in ("fp16", "", "fp32,int4"):
        with pytest.raises(LoadTestError, match="--setups"):
            parse_setups(spec)


def test_fixed_label_sets_past_the_pool_number_its_labels_again():
    pool = WORKLOAD.label_pool
    labels = WORKLOAD.sampler("fixed", f"{len(pool) + 3}:1").next().labels
    assert labels[:len(pool)] == tuple(pool) and labels[len(pool):] == tuple(f"{label} 1" for label in pool[:3])
    assert len(set(WORKLOAD.sampler("fixed", "256:1").next().labels)) == 256


def test_every_program_shares_the_conditions_and_options_of_loadtest_results():
    from loadtest import analyze, bench, compare, perf, results, run, soak

    meta = results.served_meta({"source": "m", "runtime": "python-ort"}, served={"a": {}}, note="n")
    assert (meta["model"], meta["runtime"], meta["precision"], meta["max_length"]) == ("m", "python-ort", "unknown",
                                                                                       None)
    assert meta["served"] == {"a": {}} and meta["note"] == "n" and meta["hardware"] and meta["started"]
    for program in (analyze, bench, compare, perf, run, soak):
        args = program.build_parser().parse_args(["--out", "x", "--note", "y", "--label-mode", "sets"])
        assert (args.out, args.note, args.label_mode, args.workload.name) == (Path("x"), "y", "sets", "workload.json")
    assert soak.build_parser().parse_args([]).grpc_url == "127.0.0.1:8001"
    assert bench.build_parser().parse_args(["--http-url", "h:1"]).http_url == "h:1"


def test_the_bench_header_gives_each_cases_labels_where_they_differ():
    from loadtest.bench_report import labels_line

    assert labels_line({"": 5.0}) == "5.0 labels/request on average"
    assert labels_line({"5 labels": 5.0, "50 labels": 50.0}) == (
        "labels/request on average: 5.0 in 5 labels, 50.0 in 50 labels")


# Locust monkey-patches the process with gevent when imported, so its users run in a process of their own
LOCUST_USER_AGAINST_A_FAKE_SERVER = '''
import argparse, sys, time
import loadtest.locustfile as locustfile
from locust.env import Environment
import gevent, gevent.pywsgi

delay_s, timeout_s, body = float(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
def app(environ, start_response):  # answers 200 with `body`, after delay_s
    gevent.sleep(delay_s)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

server = gevent.pywsgi.WSGIServer(("127.0.0.1", 0), app, log=None)
server.start()
parser = argparse.ArgumentParser()
locustfile._options(parser)
environment = Environment(user_classes=[locustfile.TritonHttpUser], host=f"http://127.0.0.1:{server.server_port}",
                          parsed_options=parser.parse_args(["--request-timeout-s", timeout_s]))
requests = []
environment.events.request.add_listener(lambda **request: requests.append(request))
locustfile.TritonHttpUser.host = environment.host
user = locustfile.TritonHttpUser(environment)
user.on_start()
started = time.monotonic()
user.classify()
print(round(time.monotonic() - started, 2), requests[0]["exception"])
'''


ANOTHER_ANSWER = json.dumps({"outputs": [{"name": "LABELS", "datatype": "BYTES", "shape": [1], "data": ["x"]},
                                         {"name": "SCORES", "datatype": "FP32", "shape": [1], "data": [1.0]}]})


@pytest.mark.parametrize(("delay_s", "body", "failure"), [
    (3, "{}", "timed out"), (0, "{}", "unreadable answer (KeyError"),
    (0, ANOTHER_ANSWER, "labels ['x'] are not the request's"),  # well formed, but not this request's answer
])
def test_a_locust_http_user_fails_slow_unreadable_and_wrong_answers(tmp_path, delay_s, body, failure):
    import subprocess

    script = tmp_path / "user.py"
    script.write_text(LOCUST_USER_AGAINST_A_FAKE_SERVER)
    done = subprocess.run([sys.executable, str(script), str(delay_s), "1", body], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    elapsed_s, exception = done.stdout.split(" ", 1)
    assert failure in exception and float(elapsed_s) < 2.5  # --request-timeout-s 1, not Locust's 60 s


@pytest.mark.parametrize(("program", "argv", "flag"), [
    ("soak", ["--after-load", "-1"], "--after-load"),  # a negative rate ran the arrival clock backwards forever
    ("soak", ["--burst-s", "0"], "--burst-s"),
    ("soak", ["--timeout-s", "0"], "--timeout-s"),
    ("soak", ["--capacity-concurrency", "0"], "--capacity-concurrency"),
    ("soak", ["--sample-s", "0"], "--sample-s"),
    ("soak", ["--load", "nan"], "--load"),
    ("bench", ["--duration-s", "-3"], "--duration-s"),
    ("bench", ["--warmup-s", "-1"], "--warmup-s"),
    ("run", ["--request-timeout-s", "0"], "--request-timeout-s"),
])
def test_load_test_flags_refuse_values_that_cannot_make_a_run(program, argv, flag, capsys):
    import importlib

    parser = importlib.import_module(f"loadtest.{program}").build_parser()
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(argv)
    assert exited.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err


class AnswersFrom:
    """A client whose answers `answer(text, labels)` makes, as (text, labels, scores): the real server answers
    correctly, which is what the checks exist for, so a wrong answer needs this stand-in."""

    def __init__(self, answer) -> None:
        self.answer = answer

    async def classify(self, text, labels, multi_label=False):
        from zsc_client.request import ClassificationResult

        return ClassificationResult(*self.answer(text, list(labels)), latency_ms=1.0)


@pytest.mark.parametrize(("answer", "counted_as"), [
    (lambda text, labels: (text, labels, [0.5, 0.3, 0.2]), None),  # right: counted correct
    (lambda text, labels: (text, labels[:-1], [0.6, 0.4]), "are not the request's"),  # a label lost
    (lambda text, labels: (text, labels, [0.2, 0.3, 0.5]), "sorted high to low"),
    (lambda text, labels: (text, labels, [0.5, 0.3, 0.3]), "sum to 1.1000"),
    (lambda text, labels: ("another text", labels, [0.5, 0.3, 0.2]), "answer for text 'another text'"),
])
def test_the_driver_counts_every_wrong_answer_as_mismatched(answer, counted_as):
    """What closed_loop and open_loop call for each request (loadtest/driver.py): a wrong answer is counted
    mismatched, with the reason among the report's examples, never correct."""
    import asyncio

    from loadtest.driver import Tally, classify_into

    tally = Tally(0.0)
    request = ClassifyRequest("我的快递还没到", ("物流", "退款", "表扬"))
    asyncio.run(classify_into(tally, AnswersFrom(answer), request, "probabilities"))
    summary = tally.summary()
    if counted_as is None:
        assert (summary["correct"], summary["mismatched"]) == (1, 0)
    else:
        assert (summary["correct"], summary["mismatched"]) == (0, 1)
        assert counted_as in summary["examples"][0]
