"""loadtest.server.Target: one place that turns what a measurement is pointed at into its URLs."""

from __future__ import annotations

from loadtest.server import Target


def test_http_and_metrics_default_to_tritons_ports_on_the_grpc_host():
    target = Target.from_urls("10.0.0.5:8001")
    assert (target.http_url, target.metrics_url) == ("10.0.0.5:8000", "http://10.0.0.5:8002/metrics")


def test_a_metrics_url_given_as_host_and_port_is_tritons_endpoint_there():
    for given in ("127.0.0.1:18002", "http://127.0.0.1:18002", "http://127.0.0.1:18002/metrics"):
        assert Target.from_urls("127.0.0.1:18001", metrics_url=given).metrics_url == "http://127.0.0.1:18002/metrics"
    assert Target.from_urls("127.0.0.1:18001", metrics_url="none").metrics_url == "none"
    assert Target.from_urls("h:1", metrics_url="https://m:9/prom").metrics_url == "https://m:9/prom"


def test_given_urls_win_and_an_http_scheme_is_dropped():
    target = Target.from_urls("127.0.0.1:9001", "http://127.0.0.1:9000/", "http://127.0.0.1:9002/metrics", "key")
    assert target == Target("127.0.0.1:9001", "127.0.0.1:9000", "http://127.0.0.1:9002/metrics", "key")
    assert target.url("grpc") == "127.0.0.1:9001" and target.url("http") == "127.0.0.1:9000"
    assert target.header_flags("http") == ["-H", "zsc-admin-key:key"]
    assert Target.from_urls("127.0.0.1:9001").header_flags("grpc") == []


def test_a_remote_server_has_no_local_process_and_a_missing_one_no_export_info():
    assert Target.from_urls("192.0.2.1:8001").server_pid() is None
    assert Target.from_urls("127.0.0.1:9", "127.0.0.1:9").export_info() == {}
    assert Target.from_urls("127.0.0.1:9", "127.0.0.1:9", "http://127.0.0.1:9/metrics").counters() == []
