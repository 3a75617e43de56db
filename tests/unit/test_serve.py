"""The launcher's choices that need no tritonserver: the flags it gives Triton (restricted APIs, response
cache, where HTTP binds behind the front), refusing busy ports before starting anything, and the
supervisor's restart policy. A real tritonserver killed and restarted: tests/integration/test_exposure.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from zsc_server.admin_api import ADMIN_HEADER
from zsc_server.serve import build_parser, main, server_for
from zsc_server.supervisor import RestartPolicy, Supervisor, exit_reason
from zsc_server.triton_process import RESPONSE_CACHE_FLAG, ServerError


def command(*argv: str) -> list[str]:
    return server_for(build_parser().parse_args(["--repository", "/models", *argv])).command(Path("/b"))


def test_every_api_inference_does_not_need_is_restricted_unless_opened():
    [http] = [flag for flag in command() if flag.startswith("--http-restricted-api=")]
    assert http.startswith(f"--http-restricted-api=shared-memory,logging,trace,statistics,model-repository:"
                           f"{ADMIN_HEADER}=")
    [http] = [flag for flag in command("--open-api", "statistics", "--open-api", "shared-memory")
              if flag.startswith("--http-restricted-api=")]
    assert http.startswith(f"--http-restricted-api=logging,trace,model-repository:{ADMIN_HEADER}=")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--open-api", "inference"])


def test_the_response_cache_is_on_only_where_the_server_is_not_exposed():
    assert RESPONSE_CACHE_FLAG in command()
    assert RESPONSE_CACHE_FLAG not in command("--host", "0.0.0.0")
    assert RESPONSE_CACHE_FLAG in command("--host", "0.0.0.0", "--response-cache", "on")
    assert RESPONSE_CACHE_FLAG not in command("--response-cache", "off")


def test_behind_the_fronts_tritonserver_listens_on_private_loopback_ports():
    public = ("--host", "0.0.0.0", "--http-port", "8000", "--grpc-port", "8001")
    flags = command(*public)
    assert "--http-address=127.0.0.1" in flags and "--http-port=8000" not in flags
    assert "--grpc-address=127.0.0.1" in flags and "--grpc-port=8001" not in flags
    flags = command(*public, "--front", "http")
    assert "--http-address=127.0.0.1" in flags and "--http-port=8000" not in flags
    assert "--grpc-address=0.0.0.0" in flags and "--grpc-port=8001" in flags
    flags = command(*public, "--front", "off")
    assert "--http-address=0.0.0.0" in flags and "--http-port=8000" in flags and "--grpc-port=8001" in flags


def test_a_busy_port_is_named_before_anything_starts(tmp_path, capsys):
    (tmp_path / "zero_shot").mkdir()
    (tmp_path / "zero_shot" / "config.pbtxt").write_text("")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--repository", str(tmp_path), "--grpc-port", str(port)]) == 1
    error = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in error and "GRPC_PORT" in error


def test_no_exported_repository_names_make_export(tmp_path, capsys):
    assert main(["--repository", str(tmp_path)]) == 1
    assert "run `make export` first" in capsys.readouterr().err
    assert main(["--repository", str(tmp_path), "--check-export"]) == 1  # the compose stack's check-export
    assert "run `make export` first" in capsys.readouterr().err


def test_check_export_passes_an_exported_repository_without_serving_it(tmp_path, capsys):
    (tmp_path / "zero_shot").mkdir()
    (tmp_path / "zero_shot" / "config.pbtxt").write_text('name: "zero_shot"\n')
    assert main(["--repository", str(tmp_path), "--check-export"]) == 0
    assert "holds an exported model" in capsys.readouterr().out


def test_restart_delays_grow_only_for_starts_that_never_became_ready():
    policy = RestartPolicy()
    assert policy.delay_s(0) == 0.5
    assert [policy.delay_s(n) for n in (1, 2, 3, 6, 10)] == [1.0, 2.0, 4.0, 30.0, 30.0]


def test_exit_reasons_name_the_signal():
    assert exit_reason(-11) == "tritonserver was killed by SIGSEGV"
    assert exit_reason(1) == "tritonserver exited with code 1"
    assert exit_reason(None) == "tritonserver stopped answering"


class NeverReady:
    """A server that fails to start, as tritonserver does on a taken port or a broken repository."""

    starts = 0
    shutdown_notes: list[str] = []
    repository = Path("/models")

    def start(self):
        NeverReady.starts += 1

    def wait_until_ready(self, timeout_s, cancelled):
        raise ServerError("tritonserver exited with code 1")

    def stop(self):
        return 1


def test_a_first_start_that_fails_is_not_retried(capsys):
    NeverReady.starts = 0
    supervisor = Supervisor(NeverReady, lambda: False, lambda server, first: None,
                            policy=RestartPolicy(failed_start_delay_s=0.01))
    assert supervisor.run() == 1 and NeverReady.starts == 1
    assert "exited with code 1" in capsys.readouterr().err


def test_the_ready_lines_example_suits_the_exported_model(tmp_path):
    from zsc_server.serve import example_request

    (tmp_path / "encoder").mkdir()
    assert "delivery" in example_request(tmp_path)  # no export.json: English
    for info, language in (({"layout": "modelscope", "source": "/ckpt"}, "咨询"),
                           ({"layout": "sentence-transformers", "source": "offline-minilm"}, "delivery"),
                           ({"layout": "huggingface", "source": "uer/roberta-base-chinese-nli"}, "咨询")):
        (tmp_path / "encoder" / "export.json").write_text(json.dumps(info))
        assert language in example_request(tmp_path)


def test_tritonserver_runs_below_the_fronts_only_where_they_refuse_overload(tmp_path):
    from export.repository import ServingSettings, preprocess_config, to_pbtxt
    from zsc_server.admission import AdmissionSettings
    from zsc_server.serve import front_gate
    from zsc_server.settings import ScoringSettings

    (tmp_path / "preprocess").mkdir()
    config = tmp_path / "preprocess" / "config.pbtxt"

    def niceness(*argv: str) -> int:
        args = build_parser().parse_args(["--repository", str(tmp_path), *argv])
        return server_for(args, front_gate(args)).nice

    config.write_text(to_pbtxt(preprocess_config(ScoringSettings(), ServingSettings(
        admission=AdmissionSettings(budget_ms=150)))))
    assert niceness() == niceness("--front", "http") == 10
    assert niceness("--server-nice", "5") == 5
    assert niceness("--front", "off") == 0  # tritonserver's own ports: nothing refuses before it
    config.write_text(to_pbtxt(preprocess_config(ScoringSettings(), ServingSettings())))  # admission off (GPU)
    assert niceness() == 0  # the fronts would hand a niced server whatever comes


@pytest.mark.parametrize(("argv", "flag"), [
    (["--cpus", "abc"], "--cpus"), (["--cpus", "99999"], "--cpus"), (["--http-port", "70000"], "--http-port"),
    (["--ready-timeout-s", "0"], "--ready-timeout-s"),
])
def test_the_launcher_refuses_bad_flags_before_starting_anything(argv, flag, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err


def test_the_launcher_refuses_one_port_for_two_services_and_a_host_it_cannot_bind(tmp_path, capsys):
    # tritonserver failed to bind its metrics port, and the launcher restarted it every few seconds for ever
    (tmp_path / "zero_shot").mkdir()
    (tmp_path / "zero_shot" / "config.pbtxt").write_text('name: "zero_shot"\n')
    assert main(["--repository", str(tmp_path), "--http-port", "29007", "--metrics-port", "29007"]) == 2
    assert "must be three different ports" in capsys.readouterr().err
    # a host that does not resolve is no port in use
    assert main(["--repository", str(tmp_path), "--host", "nosuch.invalid"]) == 2
    assert "--host nosuch.invalid: no such address here" in capsys.readouterr().err
