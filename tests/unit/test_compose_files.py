"""docker-compose.yml, deploy/compose.gpu.yml, the Dockerfiles and deploy/requirements/, read without Docker:
every reference, flag, pin and build argument that can be checked here. `make compose-smoke` builds and runs
the CPU stack on a real engine (tests/unit/test_compose_smoke.py checks its parts); only a GPU host runs the
GPU stack, so these checks are all the GPU stack gets here."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import tomllib

from export.cli import build_parser as export_parser
from tests.deploy_files import (
    PORTS,
    REQUIREMENTS,
    ROOT,
    dockerfile_exec_form,
    dockerfile_instructions,
    load_compose,
    project_pins,
    requirement_pins,
)
from zsc_client.cli import build_parser as zsc_parser
from zsc_server.serve import build_parser as serve_parser

STACKS = ("cpu", "gpu")
BUILT = ("triton", "export", "webui", "locust", "check-export")


def dockerfile(service: dict) -> Path:
    return ROOT / service["build"]["context"] / service["build"]["dockerfile"]


@pytest.mark.parametrize("stack", STACKS)
def test_services_build_from_files_that_exist_and_mount_what_exists(stack):
    compose = load_compose(stack)
    services = compose["services"]
    assert {"triton", "check-export", "export", "prometheus", "grafana", "locust", "webui"} <= set(services)
    for name in BUILT:
        assert dockerfile(services[name]).is_file(), name
        assert set(services[name]["build"]["args"]) >= {"BASE_IMAGE", "OS_PACKAGES", "PIP_NO_INDEX", "REQUIREMENTS"}
        assert (REQUIREMENTS / services[name]["build"]["args"]["REQUIREMENTS"]).is_file(), name
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
        for dependency in service.get("depends_on", []):
            assert dependency in services


def test_gpu_and_cpu_images_differ_only_by_build_arguments():
    """What CI builds (CPU) is, line for line, what a GPU host builds: the overlay names no other
    Dockerfile or context, only arguments, images and the GPU reservation."""
    overlay = load_compose("gpu")["services"]
    cpu = load_compose("cpu")["services"]
    for name in ("triton", "check-export", "export"):
        assert dockerfile(overlay[name]) == dockerfile(cpu[name])
        assert overlay[name]["build"]["args"]["BASE_IMAGE"].startswith("nvcr.io/nvidia/")
        assert cpu[name]["build"]["args"]["BASE_IMAGE"] == "debian:bookworm-slim"
        assert overlay[name]["image"] != cpu[name]["image"]
    for name in ("triton", "export"):
        assert "deploy" in overlay[name] and "deploy" not in cpu[name]  # a GPU reservation only on the GPU stack
    for path in {dockerfile(service) for service in cpu.values() if "build" in service}:
        froms = [argument for keyword, argument in dockerfile_instructions(path) if keyword == "FROM"]
        assert froms[0] == "${BASE_IMAGE} AS base", path.name  # the base is always a build argument


def test_offline_build_variables_reach_every_build():
    """make compose-smoke's variables (deploy.images.build_env) build from the local base and the wheelhouse,
    with no network in the build."""
    from deploy.images import BASE_IMAGE, build_env

    services = load_compose("cpu", env=build_env())["services"]
    for name in BUILT:
        build = services[name]["build"]
        assert build["args"]["BASE_IMAGE"] == BASE_IMAGE and build["args"]["OS_PACKAGES"] == ""
        assert build["args"]["PIP_NO_INDEX"] == "1" and build["network"] == "none"
    default = load_compose("cpu")["services"]["triton"]["build"]
    assert default["network"] == "default" and default["args"]["PIP_NO_INDEX"] == ""


def test_every_dockerfile_copies_the_wheelhouse_into_the_build_stage_only():
    """The wheels stay out of the final image: the venv is built in a stage of its own and copied."""
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "deploy/wheelhouse" not in ignored and ".venv" in ignored and "model_repository" in ignored
    python_images = [path for path in (ROOT / "deploy").glob("*.Dockerfile") if "python-env.sh" in path.read_text()]
    assert len(python_images) == 3
    for path in python_images:
        instructions = dockerfile_instructions(path)
        stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
        final = instructions[stages[-1]:]
        assert ("COPY", "deploy/wheelhouse /wheelhouse") in instructions[:stages[-1]], path.name
        assert ("COPY", "--from=venv /opt/venv /opt/venv") in final, path.name
        assert all("wheelhouse" not in argument for _, argument in final), path.name


def test_every_deployment_runs_the_launcher_that_the_tests_run():
    """compose command == image CMD == Kubernetes args == `make serve`'s launcher (zsc_server.serve)."""
    from tests.deploy_files import k8s_documents

    compose_command = load_compose("cpu")["services"]["triton"]["command"]
    image_command = dockerfile_exec_form(ROOT / "deploy" / "triton.Dockerfile", "CMD")
    [container] = k8s_documents()["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert compose_command == image_command == container["args"]
    assert compose_command[:3] == ["python3", "-m", "zsc_server.serve"]
    args = serve_parser().parse_args(compose_command[3:])
    assert str(args.repository) == "/models" and args.host == "0.0.0.0" and args.revive and args.gpu_metrics
    assert (args.http_port, args.grpc_port, args.metrics_port) == tuple(PORTS.values())
    # the GPU image runs NGC's tritonserver; the CPU image (empty) the wheel's
    gpu_args = load_compose("gpu")["services"]["triton"]["build"]["args"]
    assert (gpu_args["TRITONSERVER"], gpu_args["TRITON_BACKENDS"]) == (
        "/opt/tritonserver/bin/tritonserver", "/opt/tritonserver/backends")
    assert "TRITONSERVER" not in load_compose("cpu")["services"]["triton"]["build"]["args"]
    instructions = dockerfile_instructions(ROOT / "deploy" / "triton.Dockerfile")
    assert ("ARG", "TRITONSERVER=") in instructions and ("ARG", "TRITON_BACKENDS=") in instructions
    env = " ".join(argument for keyword, argument in instructions if keyword == "ENV")
    assert "TRITONSERVER=${TRITONSERVER}" in env and "TRITON_BACKENDS=${TRITON_BACKENDS}" in env


def test_the_server_waits_for_a_check_that_names_make_export():
    services = load_compose("cpu")["services"]
    check = services["check-export"]
    assert check["image"] == services["triton"]["image"] and check["build"] == services["triton"]["build"]
    assert check["volumes"] == services["triton"]["volumes"] and check["network_mode"] == "none"
    args = serve_parser().parse_args(check["command"][3:])
    assert args.check_export and str(args.repository) == "/models"
    assert services["triton"]["depends_on"]["check-export"]["condition"] == "service_completed_successfully"


def test_ports_health_check_and_repository_mount():
    from zsc_server.supervisor import PROBE_TIMEOUT_S

    raw = load_compose(raw=True)["services"]["triton"]
    binds = {int(mapping.rsplit(":", 1)[1]): mapping.split("}")[0] + "}" for mapping in raw["ports"]}
    # loopback unless the user says otherwise: the same default as `make serve`; TRITON_BIND exposes inference,
    # and Triton's metrics (every model's counts and timings) only with a setting of their own
    assert binds == {PORTS["http"]: "${TRITON_BIND:-127.0.0.1}", PORTS["grpc"]: "${TRITON_BIND:-127.0.0.1}",
                     PORTS["metrics"]: "${METRICS_BIND:-127.0.0.1}"}
    exposed = load_compose("cpu", env={"TRITON_BIND": "0.0.0.0"})["services"]["triton"]["ports"]
    assert sorted(exposed) == ["0.0.0.0:8000:8000", "0.0.0.0:8001:8001", "127.0.0.1:8002:8002"]
    triton = load_compose("cpu")["services"]["triton"]
    assert {int(mapping.rsplit(":", 1)[1]) for mapping in triton["ports"]} == set(PORTS.values())
    health = triton["healthcheck"]["test"]
    assert health[0] == "CMD" and "zsc_server.probe" in health  # a real classification
    assert f"http://localhost:{PORTS['http']}" in health
    assert float(health[health.index("--timeout-s") + 1]) == PROBE_TIMEOUT_S
    assert float(triton["healthcheck"]["timeout"].removesuffix("s")) > PROBE_TIMEOUT_S
    assert triton["shm_size"]
    assert "ulimits" not in triton  # memlock: pinned memory for CUDA, GPU stack only
    assert load_compose("gpu")["services"]["triton"]["ulimits"]["memlock"] == -1

    [mount] = [volume for volume in triton["volumes"] if volume.endswith(":/models:ro")]
    served = (ROOT / mount.split(":")[0]).resolve()
    # the repository the compose stack serves by default is the one `make export`, `make serve` and the tests use
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^REPOSITORY \?= (\S+)$", makefile, re.M).group(1) == served.name
    assert serve_parser().parse_args([]).repository.resolve() == served
    assert (ROOT / export_parser().parse_args(["--model", "x"]).repository).resolve() == served
    other = load_compose("cpu", env={"ZSC_MODEL_REPOSITORY": "./exports/x"})["services"]["triton"]["volumes"]
    assert other == ["./exports/x:/models:ro"]  # what export.compose_env writes for another REPOSITORY


def test_export_service_command_is_a_valid_export_invocation():
    export = load_compose("cpu")["services"]["export"]
    args = export_parser().parse_args(export["command"])
    assert str(args.repository) == "model_repository" and args.model == "offline-minilm"
    assert dockerfile_exec_form(dockerfile(export), "ENTRYPOINT") == ["python3", "-m", "export"]
    assert ".:/workspace" in export["volumes"]


def test_gpu_image_tags_are_one_ngc_release():
    """Triton serves TensorRT engines only from the TensorRT that built them: same NGC release."""
    import yaml

    from tests.deploy_files import K8S

    services = load_compose("gpu")["services"]
    triton_base = services["triton"]["build"]["args"]["BASE_IMAGE"]
    release = re.fullmatch(r"nvcr.io/nvidia/tritonserver:(\d\d\.\d\d)-py3", triton_base).group(1)
    assert services["export"]["build"]["args"]["BASE_IMAGE"] == f"nvcr.io/nvidia/pytorch:{release}-py3"
    assert services["triton"]["image"].endswith(f":{release}") and services["export"]["image"].endswith(f":{release}")
    [image] = yaml.safe_load((K8S / "kustomization.yaml").read_text())["images"]
    assert f"{image['newName']}:{image['newTag']}" == services["triton"]["image"]


def model_imports(path: Path, seen: set[Path]) -> set[str]:
    """Top-level modules imported by a model file, following this project's own modules."""
    if path in seen:
        return set()
    seen.add(path)
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "zsc_server":
            names = [f"zsc_server.{alias.name}" for alias in node.names]  # from zsc_server import module
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        for name in names:
            if name.split(".")[0] == "zsc_server":
                modules |= model_imports(ROOT / (name.replace(".", "/") + ".py"), seen)
            modules.add(name.split(".")[0])
    return modules


# import name -> distributions that provide it (any one is enough)
DISTRIBUTIONS = {
    "numpy": {"numpy"},
    "tokenizers": {"tokenizers"},
    "onnxruntime": {"onnxruntime", "onnxruntime-gpu"},
    "torch": {"torch"},
    "grpc": {"grpcio"},
    "openvino": {"openvino"},
}
PROVIDED_BY_TRITON = {"triton_python_backend_utils"}
# the python-torch runtime serves on a GPU only: the CPU image leaves torch out
GPU_ONLY = {"torch"}


def third_party(paths: list[Path]) -> set[str]:
    seen: set[Path] = set()
    imported = set().union(*(model_imports(path, seen) for path in paths))
    return imported - set(sys.stdlib_module_names) - PROVIDED_BY_TRITON - {"zsc_server", "__future__"}


@pytest.mark.parametrize("stack", STACKS)
def test_triton_image_installs_every_import_of_the_models_and_the_launcher(stack):
    model_files = [*ROOT.glob("model_repository/*/1/model.py"), *ROOT.glob("export/templates/*.py")]
    assert len(model_files) >= 3
    launcher = [ROOT / "zsc_server" / f"{name}.py" for name in ("serve", "probe", "revive")]
    requirements = load_compose(stack)["services"]["triton"]["build"]["args"]["REQUIREMENTS"]
    installed = set(requirement_pins(REQUIREMENTS / requirements))
    assert installed >= {"numpy", "grpcio"}
    assert requirement_pins(REQUIREMENTS / requirements)["numpy"].startswith("1.")  # the stub's numpy ABI
    for module in sorted(third_party(model_files + launcher) - (GPU_ONLY if stack == "cpu" else set())):
        assert module in DISTRIBUTIONS, f"model code imports {module}: add it to DISTRIBUTIONS and the image"
        assert DISTRIBUTIONS[module] & installed, f"{requirements} does not install {module}"
    assert third_party(launcher) <= {"numpy", "grpc"}  # the launcher and the probe need no more
    copied = " ".join(arg for keyword, arg in dockerfile_instructions(ROOT / "deploy" / "triton.Dockerfile")
                      if keyword == "COPY")
    assert "zsc_server" in copied


def test_image_pins_are_the_project_pins():
    """One version of each package everywhere, except the GPU images' CUDA torch (NGC's CUDA 12)."""
    pins = project_pins()
    for path in REQUIREMENTS.glob("*.txt"):
        for name, version in requirement_pins(path).items():
            if name in pins and not (path.name.endswith("-gpu.txt") and name == "torch"):
                assert version == pins[name], f"{path.name}: {name}=={version}, requirements.txt {pins[name]}"


def test_locust_service_runs_this_scenario_against_triton():
    locust = load_compose("cpu")["services"]["locust"]
    command = locust["command"]
    assert command[command.index("--host") + 1] == f"http://triton:{PORTS['http']}"
    assert command[command.index("--grpc-url") + 1] == f"triton:{PORTS['grpc']}"
    assert "triton" in locust["depends_on"]
    locustfile = locust["entrypoint"][-1].removeprefix("/opt/zero-shot-triton/")
    assert locust["entrypoint"][:2] == ["locust", "-f"] and (ROOT / locustfile).is_file()
    assert ("COPY", "loadtest /opt/zero-shot-triton/loadtest") in dockerfile_instructions(dockerfile(locust))
    assert "locust" in requirement_pins(REQUIREMENTS / locust["build"]["args"]["REQUIREMENTS"])


def test_the_cpu_triton_image_has_haproxy_for_the_launchers_edge_and_the_gpu_image_does_not_need_it():
    """The launcher runs its edge proxy where haproxy is installed (zsc_server.edge); GPU exports have no
    admission control for it to follow, so the NGC image goes without."""
    cpu, gpu = (load_compose(stack)["services"]["triton"]["build"]["args"]["OS_PACKAGES"] for stack in STACKS)
    assert "haproxy" in cpu.split("-", 1)[1].rstrip("}").split() and "haproxy" not in gpu
    triton_dockerfile = dockerfile(load_compose("cpu")["services"]["triton"])
    assert "haproxy" in re.search(r'^ARG OS_PACKAGES="([^"]*)"', triton_dockerfile.read_text(), re.M).group(1)
    assert ("COPY", "zsc_server /opt/zero-shot-triton/zsc_server") in dockerfile_instructions(triton_dockerfile)
    assert "haproxy/*" in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["zsc_server"]


def test_webui_service_runs_zsc_webui_against_triton():
    webui = load_compose("cpu")["services"]["webui"]
    command = webui["command"]
    assert command[0] == "zsc"
    args = zsc_parser().parse_args(command[1:])
    assert (args.command, args.triton, args.protocol, args.host) == ("webui", f"triton:{PORTS['grpc']}", "grpc",
                                                                      "0.0.0.0")
    # published on loopback unless TRITON_BIND says otherwise, like Triton's own ports
    published = load_compose(raw=True)["services"]["webui"]["ports"]
    assert published == [f"${{TRITON_BIND:-127.0.0.1}}:{args.port}:{args.port}"]
    assert webui["depends_on"]["triton"]["condition"] == "service_healthy"
    assert dockerfile_exec_form(dockerfile(webui), "CMD") == command
    instructions = dockerfile_instructions(dockerfile(webui))
    assert ("COPY", "client /opt/zero-shot-triton/client") in instructions
    assert any(keyword == "RUN" and "/opt/zero-shot-triton/client[webui]" in argument
               for keyword, argument in instructions)
    assert str(args.port) in dict(instructions)["EXPOSE"].split()
    assert "aiohttp" in requirement_pins(REQUIREMENTS / webui["build"]["args"]["REQUIREMENTS"])


def test_the_launcher_gives_an_image_tritonserver_the_serving_flags(monkeypatch):
    """What the GPU container's launcher runs, with the NGC image's paths (TRITONSERVER / TRITON_BACKENDS)."""
    from zsc_server.serve import server_for
    from zsc_server.triton_process import SERVING_FLAGS

    monkeypatch.setenv("TRITONSERVER", "/opt/tritonserver/bin/tritonserver")
    monkeypatch.setenv("TRITON_BACKENDS", "/opt/tritonserver/backends")
    args = serve_parser().parse_args(load_compose("gpu")["services"]["triton"]["command"][3:])
    command = server_for(args).command(Path("/opt/tritonserver/backends"))
    assert command[0] == "/opt/tritonserver/bin/tritonserver"
    assert set(SERVING_FLAGS) <= set(command)
    assert "--model-repository=/models" in command and "--cache-directory=/opt/tritonserver/caches" in command
    assert "--model-control-mode=explicit" in command
    # behind the launcher's fronts, on the container's loopback; the fronts take the published ports
    assert "--http-address=127.0.0.1" in command and "--grpc-address=127.0.0.1" in command
    assert args.front == "on" and args.response_cache == "auto" and "--cache-config" not in " ".join(command)
    assert "--allow-gpu-metrics=true" in command  # the Grafana dashboard plots nv_gpu_* gauges
