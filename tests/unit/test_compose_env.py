"""export.compose_env: which compose stack `make export` writes into .env for what it exported."""

from __future__ import annotations

import json

import pytest

from export.compose_env import STACKS, env_lines, export_digest, main, stack_for, write_env


def exported(repository, runtime: str, kind: str):
    encoder = repository / "encoder"
    encoder.mkdir(parents=True)
    (encoder / "export.json").write_text(json.dumps({"runtime": runtime}))
    (encoder / "config.pbtxt").write_text(f'name: "encoder"\ninstance_group [{{ count: 1 kind: {kind} }}]\n')
    return repository


@pytest.mark.parametrize(("runtime", "kind", "stack"), [
    ("python-ort", "KIND_CPU", "cpu"),
    ("python-ov", "KIND_CPU", "cpu"),
    ("python-ort", "KIND_GPU", "gpu"),  # ONNX Runtime's CUDA provider: the GPU image's onnxruntime-gpu
    ("python-torch", "KIND_GPU", "gpu"),
    ("onnxruntime", "KIND_CPU", "gpu"),  # NGC's native backend, which the CPU image does not have
    ("tensorrt", "KIND_GPU", "gpu"),
])
def test_the_stack_serves_what_was_exported(tmp_path, runtime, kind, stack):
    assert stack_for(exported(tmp_path / "repo", runtime, kind))[0] == stack


def test_no_export_names_make_export(tmp_path, capsys):
    with pytest.raises(ValueError, match="run `make export` first"):
        stack_for(tmp_path)
    assert main(["--repository", str(tmp_path), "--env-file", str(tmp_path / ".env")]) == 1
    assert "make export" in capsys.readouterr().err and not (tmp_path / ".env").exists()


def test_env_file_keeps_the_users_lines_and_replaces_its_own(tmp_path):
    env = tmp_path / ".env"
    env.write_text("TRITON_BIND=0.0.0.0\nCOMPOSE_FILE=old.yml\n")
    repository = exported(tmp_path / "model_repository", "python-torch", "KIND_GPU")
    said = write_env(repository, env)
    assert env.read_text() == (f"TRITON_BIND=0.0.0.0\nCOMPOSE_FILE={STACKS['gpu']}\n"
                               f"ZSC_MODEL_REPOSITORY=./model_repository\nZSC_EXPORT_DIGEST={export_digest(repository)}\n")
    assert said.startswith("GPU stack (docker-compose.yml + deploy/compose.gpu.yml)")
    exported(tmp_path / "other", "python-ort", "KIND_CPU")
    assert write_env(tmp_path / "other", env).startswith("CPU stack")
    assert env.read_text().splitlines()[1:3] == [f"COMPOSE_FILE={STACKS['cpu']}", "ZSC_MODEL_REPOSITORY=./other"]


def test_the_export_digest_changes_with_each_export_so_compose_recreates_triton(tmp_path):
    """Triton reads the model files at start: the triton service's environment carries the digest, and compose
    recreates a container whose configuration changed."""
    from tests.deploy_files import load_compose

    repository = exported(tmp_path / "repo", "python-ov", "KIND_CPU")
    first = export_digest(repository)
    assert first == export_digest(repository)  # the same files, the same digest
    (repository / "encoder" / "config.pbtxt").write_text('name: "encoder"\nmax_batch_size: 9\n')
    assert export_digest(repository) != first
    for stack in ("cpu", "gpu"):
        triton = load_compose(stack, env={"ZSC_EXPORT_DIGEST": first})["services"]["triton"]
        assert triton["environment"]["ZSC_EXPORT_DIGEST"] == first


def test_a_new_env_file_says_who_wrote_it():
    text = env_lines("", {"COMPOSE_FILE": "docker-compose.yml"})
    assert text.startswith("# Written by `make export`") and text.endswith("COMPOSE_FILE=docker-compose.yml\n")


def test_every_stack_names_compose_files_that_exist():
    from tests.deploy_files import ROOT

    for files in STACKS.values():
        assert all((ROOT / name).is_file() for name in files.split(":"))
