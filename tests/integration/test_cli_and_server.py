"""The `zsc` CLI and the `make serve` launcher, as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import free_ports, serve_launcher


def zsc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zsc_client.cli", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_classify_json(structbert, protocol):
    url = structbert.server.grpc_url if protocol == "grpc" else structbert.server.http_url
    done = zsc("classify", "--url", url, "--protocol", protocol, "--labels", "咨询,投诉，建议", "--json",
               "我的快递还没到", "我要投诉")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["text"] for line in lines] == ["我的快递还没到", "我要投诉"]
    with structbert.client(protocol) as client:
        expected = client.classify("我的快递还没到", "咨询,投诉，建议")
    assert lines[0]["labels"] == expected.labels
    assert abs(sum(lines[0]["scores"]) - 1.0) < 1e-5


def test_cli_classify_table_and_errors(structbert):
    done = zsc("classify", "--url", structbert.server.grpc_url, "--labels", "咨询,投诉", "--multi-label",
               "--template", "这是{}", "你好")
    assert done.returncode == 0, done.stderr
    assert "咨询" in done.stdout and "round trip" in done.stdout
    bad = zsc("classify", "--url", structbert.server.grpc_url, "--labels", "咨询", "--template", "x", "你好")
    assert bad.returncode == 1
    assert "HYPOTHESIS_TEMPLATE" in bad.stderr


def test_cli_reads_one_text_a_line_from_stdin_without_its_line_end(structbert):
    done = subprocess.run([sys.executable, "-m", "zsc_client.cli", "classify", "--url", structbert.server.grpc_url,
                           "--labels", "咨询,投诉", "--json", "-"], input="我的快递还没到\r\n\r\n我要投诉\n",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["text"] for line in done.stdout.splitlines()] == ["我的快递还没到", "我要投诉"]


def test_cli_health(structbert):
    ok = zsc("health", "--url", structbert.server.http_url, "--protocol", "http", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["model_ready"] is True
    down = zsc("health", "--url", f"127.0.0.1:{free_ports(1)[0]}")
    assert down.returncode == 1 and "NOT healthy" in down.stdout


def test_serve_launcher_foreground_and_sigint(structbert):
    """`python -m zsc_server.serve` (what `make serve` runs): ready message, answers, clean Ctrl-C."""
    from loadtest.server import allowed_cpus, find_tritonserver

    with serve_launcher(structbert.repository, "--cpus", "0") as (process, line, grpc):
        assert f"127.0.0.1:{grpc}" in line
        assert zsc("health", "--url", f"127.0.0.1:{grpc}").returncode == 0
        server_pid = find_tritonserver(grpc)
        assert allowed_cpus(server_pid) == "0"  # --cpus: tritonserver (and its stubs) on core 0
        # below the fronts' CPU priority by default, so that they refuse overload without waiting behind it
        assert os.getpriority(os.PRIO_PROCESS, server_pid) - os.getpriority(os.PRIO_PROCESS, process.pid) == 10
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert "exited with code 0" in process.stdout.read()


def test_serve_launcher_refuses_to_serve_half_an_ensemble(structbert, tmp_path):
    """A model that fails to load stops tritonserver (--exit-on-error, with every model loaded at start in
    explicit model-control mode) and the launcher exits 1, rather than serving an ensemble without it."""
    import shutil

    repository = shutil.copytree(structbert.repository, tmp_path / "repository")
    (repository / "encoder" / "1" / "model.py").write_text('raise RuntimeError("broken on purpose")\n')
    http, grpc, metrics = free_ports(3)
    done = subprocess.run([sys.executable, "-m", "zsc_server.serve", "--repository", str(repository),
                           "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "broken on purpose" in output and "failed to load all models" in output
    assert "[serve] ready" not in output


def test_plain_kserve_v2_json(structbert):
    """What README's curl example sends: no client library, optional inputs left out."""
    import urllib.request

    body = {"inputs": [
        {"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["我的快递三天了还没到"]},
        {"name": "CANDIDATE_LABELS", "shape": [1], "datatype": "BYTES", "data": ["咨询,投诉,建议"]},
    ]}
    request = urllib.request.Request(
        f"http://{structbert.server.http_url}/v2/models/zero_shot/infer",
        data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        outputs = {o["name"]: o["data"] for o in json.loads(response.read())["outputs"]}
    with structbert.client("http") as client:
        expected = client.classify("我的快递三天了还没到", "咨询,投诉,建议")
    assert outputs["LABELS"] == expected.labels
    assert outputs["SCORES"] == pytest.approx(expected.scores, abs=1e-6)


def test_server_from_an_external_install(structbert, tmp_path, monkeypatch):
    """$TRITONSERVER + $TRITON_BACKENDS (what the GPU-host bundle's setup exports) replace the wheel's
    server: here they point at a copy of the wheel's own, laid out as the bundle lays it out."""
    from zsc_server.triton_install import prepare_backends, pytriton_dir
    from zsc_server.triton_process import TritonServer

    backends = prepare_backends(tmp_path / "backends")
    monkeypatch.setenv("TRITONSERVER", str(pytriton_dir() / "tritonserver" / "bin" / "tritonserver"))
    monkeypatch.setenv("TRITON_BACKENDS", str(backends))
    monkeypatch.setenv("LD_LIBRARY_PATH", str(pytriton_dir().parent / "nvidia_pytriton.libs"))
    http, grpc, metrics = free_ports(3)
    with TritonServer(structbert.repository, http, grpc, metrics, log_path=tmp_path / "triton.log") as server:
        command = server.command(backends)
        assert f"--backend-directory={backends}" in command
        done = zsc("classify", "--url", server.grpc_url, "--labels", "咨询,投诉", "--json", "我要投诉")
        assert done.returncode == 0, done.stderr
    monkeypatch.delenv("TRITON_BACKENDS")
    with pytest.raises(Exception, match="TRITON_BACKENDS"):
        prepare_backends(tmp_path / "other")


def test_serve_launcher_warns_when_a_cpu_encoder_is_served_beside_a_gpu(structbert, tmp_path, monkeypatch):
    """A stand-in nvidia-smi (no GPU here) lists an H100; the repository's encoder was exported for the CPU."""
    import os

    from tests.fakes import fake_nvidia_smi

    folder = fake_nvidia_smi(tmp_path / "bin", "NVIDIA H100 80GB HBM3, 81559")
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    with tempfile.TemporaryFile("w+") as stderr:  # a file, not a pipe that tritonserver's log could fill
        with serve_launcher(structbert.repository, stderr=stderr) as (process, _line, grpc):
            assert zsc("health", "--url", f"127.0.0.1:{grpc}").returncode == 0  # it serves all the same
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0
        stderr.seek(0)
        warning = stderr.read()
    assert "warning: 1 GPU(s): NVIDIA H100 80GB HBM3 visible" in warning and "python-ort" in warning


def test_a_connection_error_says_which_server_was_expected_where(structbert):
    """No server at the address, gRPC sent to the HTTP port, HTTP sent to the gRPC port: each a
    ServerUnavailableError that names the protocol and address and the ports `make serve` uses."""
    from zsc_client import ServerUnavailableError, ZeroShotClient

    [nothing] = free_ports(1)
    server = structbert.server
    for url, protocol in ((f"127.0.0.1:{nothing}", "grpc"), (f"127.0.0.1:{nothing}", "http"),
                          (server.http_url, "grpc"), (server.grpc_url, "http")):
        with ZeroShotClient(url, protocol, timeout_s=5) as client, pytest.raises(ServerUnavailableError) as caught:
            client.classify("我的快递还没到", ["咨询", "投诉"])
        assert f"is a {protocol} server listening at {url}?" in caught.value.message, caught.value.message
        assert "gRPC on port 8001 and HTTP on 8000" in caught.value.message
    done = zsc("classify", "--url", f"127.0.0.1:{nothing}", "--labels", "a,b", "text")
    assert done.returncode != 0 and "make serve" in done.stderr
