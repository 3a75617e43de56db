"""zsc_server.revive's parts that need no server: reading Triton's dead-stub errors, mapping instances to
models, the tritonserver flags, and finding stub processes in /proc (with a real stand-in process).
tests/integration/test_faults.py reloads real models whose stubs were killed."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import settles
from zsc_server.probe import Health
from zsc_server.revive import (
    MODEL_CONTROL_FLAGS,
    dead_stubs,
    kill,
    owner,
    stub_models,
    stub_pids,
)


def test_dead_instances_are_read_from_tritons_error_messages():
    message = ("in ensemble 'zero_shot', Stub process 'encoder_0_0' is not healthy.; "
               "Stub process 'preprocess_0_1' is not healthy.")
    assert Health.failed(message).dead_stubs == {"encoder_0_0", "preprocess_0_1"}
    assert Health.failed("HTTP 503: exceeds maximum queue size").dead_stubs == set()
    assert Health().ok and not Health.failed("no answer").ok


def test_an_instance_belongs_to_the_model_of_its_longest_matching_group():
    groups = {"enc_0": "enc", "enc_0_big_0": "enc_big", "preprocess_0": "preprocess"}
    assert owner("enc_0_0", groups) == "enc"
    assert owner("enc_0_big_0_1", groups) == "enc_big"
    assert owner("enc_0_0_gpu1", groups) == "enc"  # device suffixes on GPU instances
    assert owner("postprocess_0_0", groups) is None


def test_model_control_is_explicit_with_every_model_loaded():
    assert MODEL_CONTROL_FLAGS == ("--model-control-mode=explicit", "--load-model=*")


def test_stub_processes_are_found_by_parent_and_model_directory(tmp_path):
    """A stand-in stub: this Python started under the stub's name on <repository>/<model>/1/model.py."""
    stub = tmp_path / "triton_python_backend_stub"
    stub.symlink_to(sys.executable)
    model_py = tmp_path / "repository" / "encoder" / "1" / "model.py"
    model_py.parent.mkdir(parents=True)
    model_py.write_text("import time\ntime.sleep(60)\n")
    process = subprocess.Popen([str(stub), str(model_py), "shm-region", "1048576"])
    try:
        settles(lambda: stub_pids(os.getpid(), "encoder"), timeout_s=10)
        assert stub_models(os.getpid()) == {process.pid: "encoder"}
        assert stub_pids(os.getpid(), "encoder") == [process.pid]
        assert stub_pids(os.getpid(), "preprocess") == []
        assert stub_models(process.pid) == {}  # not a child of that process
        assert dead_stubs(os.getpid()) == []
        kill(process.pid)  # returns once it is a zombie: no longer counted as live
        assert stub_models(os.getpid()) == {}
        assert dead_stubs(os.getpid()) == [process.pid]  # dead, and not reaped: known by its name
    finally:
        process.kill()
        process.wait()
