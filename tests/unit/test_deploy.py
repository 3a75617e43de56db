"""The deployment files (docker-compose.yml, deploy/) cannot run here: no Docker engine, no Kubernetes,
no GPU. These tests read them and check every reference that can be checked without running them:
paths, ports, flags, image tags, package coverage of the models' imports, and names shared between
compose, Prometheus, Grafana and the Kubernetes manifests."""

from __future__ import annotations

import ast
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from export.cli import build_parser as export_parser
from zsc_client.cli import build_parser as zsc_parser
from zsc_server.serve import build_parser as serve_parser
from zsc_server.triton_process import SERVING_FLAGS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


def load_compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, argument = line.partition(" ")
            pairs.append((keyword.upper(), argument.strip()))
    return pairs


def dockerfile_cmd(path: Path) -> list[str]:
    [cmd] = [json.loads(arg) for keyword, arg in dockerfile_instructions(path) if keyword == "CMD"]
    return cmd


def dockerfile_base_image(path: Path) -> str:
    args = {}
    for keyword, argument in dockerfile_instructions(path):
        if keyword == "ARG" and "=" in argument:
            name, value = argument.split("=", 1)
            args[name] = value
        if keyword == "FROM":
            return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], argument)
    raise AssertionError(f"{path} has no FROM")


def pip_installed(path: Path) -> set[str]:
    """Distribution names installed by `pip install` in RUN lines (requirement specifiers parsed)."""
    names = set()
    for keyword, argument in dockerfile_instructions(path):
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;", argument):
            words = shlex.split(command)
            if words[:2] != ["pip", "install"]:
                continue
            for word in words[2:]:
                if not word.startswith("-") and not word.startswith("/"):
                    names.add(re.split(r"[\[=<>!~]", word, maxsplit=1)[0].lower())
    return names


def k8s_documents() -> dict[str, dict]:
    """Every manifest kustomization.yaml lists, by kind."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents = {}
    for resource in kustomization["resources"]:
        path = K8S / resource
        assert path.is_file(), f"kustomization.yaml lists {resource}, which does not exist"
        for document in yaml.safe_load_all(path.read_text()):
            documents[document["kind"]] = document
    return documents


# ---------------------------------------------------------------------------- compose


def test_compose_services_and_referenced_files_exist():
    compose = load_compose()
    services = compose["services"]
    assert {"triton", "export", "prometheus", "grafana", "locust", "webui"} <= set(services)
    for name, service in services.items():
        if "build" in service:
            context = ROOT / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose["volumes"], f"{name} mounts undeclared volume {source}"
        for dependency in service.get("depends_on", []):
            assert dependency in services


def test_every_deployment_runs_the_launcher_that_the_tests_run():
    """compose command == image CMD == Kubernetes args == `make serve`'s launcher (zsc_server.serve), so
    the container's tritonserver gets exactly the flags of the local servers the tests start, on the
    image's own tritonserver and Python backend."""
    compose_command = load_compose()["services"]["triton"]["command"]
    image_command = dockerfile_cmd(ROOT / "deploy" / "triton.Dockerfile")
    deployment = k8s_documents()["Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert compose_command == image_command == container["args"]
    assert compose_command[:3] == ["python3", "-m", "zsc_server.serve"]
    args = serve_parser().parse_args(compose_command[3:])
    assert str(args.repository) == "/models" and args.host == "0.0.0.0" and args.revive and args.gpu_metrics
    assert (args.http_port, args.grpc_port, args.metrics_port) == tuple(PORTS.values())
    instructions = dockerfile_instructions(ROOT / "deploy" / "triton.Dockerfile")
    env = dict(pair.split("=", 1) for keyword, argument in instructions if keyword == "ENV"
               for pair in argument.split())
    assert env == {"TRITONSERVER": "/opt/tritonserver/bin/tritonserver",
                   "TRITON_BACKENDS": "/opt/tritonserver/backends"}


def test_the_launcher_gives_an_image_tritonserver_the_serving_flags(monkeypatch):
    """What the container's launcher runs, with the image's paths (TRITONSERVER / TRITON_BACKENDS)."""
    from zsc_server.serve import server_for

    monkeypatch.setenv("TRITONSERVER", "/opt/tritonserver/bin/tritonserver")
    monkeypatch.setenv("TRITON_BACKENDS", "/opt/tritonserver/backends")
    args = serve_parser().parse_args(load_compose()["services"]["triton"]["command"][3:])
    command = server_for(args).command(Path("/opt/tritonserver/backends"))
    assert command[0] == "/opt/tritonserver/bin/tritonserver"
    assert set(SERVING_FLAGS) <= set(command)
    assert "--model-repository=/models" in command and "--cache-directory=/opt/tritonserver/caches" in command
    assert "--model-control-mode=explicit" in command
    # behind the launcher's fronts, on the container's loopback; the fronts take the published ports
    assert "--http-address=127.0.0.1" in command and "--grpc-address=127.0.0.1" in command
    assert args.front == "on" and args.response_cache == "auto" and "--cache-config" not in " ".join(command)
    assert "--allow-gpu-metrics=true" in command  # the Grafana dashboard plots nv_gpu_* gauges


def probe_timeout(command: list[str]) -> float:
    assert command[command.index("python3"):][:3] == ["python3", "-m", "zsc_server.probe"]
    return float(command[command.index("--timeout-s") + 1])


def test_health_probes_outwait_the_queue_timeout_so_a_busy_server_passes():
    """A probe that gives up before the encoder's queue refuses it would call an overloaded server dead."""
    from export.cli import QUEUE_BUDGET_MS
    from zsc_server.supervisor import PROBE_TIMEOUT_S

    # the longest budget `--queue-timeout-ms auto` can choose
    assert export_parser().parse_args(["--model", "x"]).queue_timeout_ms == "auto"
    queue_timeout_s = QUEUE_BUDGET_MS[1] / 1000
    compose = load_compose()["services"]["triton"]["healthcheck"]
    [container] = k8s_documents()["Deployment"]["spec"]["template"]["spec"]["containers"]
    liveness = container["livenessProbe"]
    for timeout_s in (probe_timeout(compose["test"]), probe_timeout(liveness["exec"]["command"]), PROBE_TIMEOUT_S):
        assert timeout_s == PROBE_TIMEOUT_S > queue_timeout_s
    assert float(compose["timeout"].removesuffix("s")) > PROBE_TIMEOUT_S
    assert liveness["timeoutSeconds"] > PROBE_TIMEOUT_S


def test_the_launcher_and_the_probe_import_only_what_the_triton_image_has():
    """They run on the image's own python3 (numpy 1.26 installed, nothing else added for them)."""
    seen: set[Path] = set()
    imported = set().union(*(model_imports(ROOT / "zsc_server" / f"{name}.py", seen)
                             for name in ("serve", "probe", "revive")))
    assert imported - set(sys.stdlib_module_names) - {"zsc_server", "__future__"} <= {"numpy", "grpc"}
    assert '"grpcio==' in (ROOT / "deploy" / "triton.Dockerfile").read_text()  # the gRPC front's


def test_compose_ports_health_check_and_repository_mount():
    triton = load_compose()["services"]["triton"]
    published = {int(mapping.rsplit(":", 1)[1]) for mapping in triton["ports"]}
    assert published == set(PORTS.values())
    for mapping in triton["ports"]:
        # loopback unless the user sets TRITON_BIND: the same default as `make serve`
        assert mapping.startswith("${TRITON_BIND:-127.0.0.1}:")
    health = triton["healthcheck"]["test"]
    assert health[:4] == ["CMD", "python3", "-m", "zsc_server.probe"]  # a real classification
    assert f"http://localhost:{PORTS['http']}" in health
    assert triton["shm_size"]
    assert any(device["capabilities"] == ["gpu"]
               for device in triton["deploy"]["resources"]["reservations"]["devices"])

    [mount] = [volume for volume in triton["volumes"] if volume.endswith(":/models:ro")]
    served = (ROOT / mount.split(":")[0]).resolve()
    # the repository the compose stack serves is the one `make export`, `make serve` and the tests use
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^REPOSITORY \?= (\S+)$", makefile, re.M).group(1) == served.name
    assert serve_parser().parse_args([]).repository.resolve() == served
    assert (ROOT / export_parser().parse_args(["--model", "x"]).repository).resolve() == served


def test_export_service_command_is_a_valid_export_invocation():
    export = load_compose()["services"]["export"]
    args = export_parser().parse_args(export["command"])
    assert str(args.repository) == "model_repository"
    [(keyword, entrypoint)] = [pair for pair in dockerfile_instructions(ROOT / "deploy" / "export.Dockerfile")
                               if pair[0] == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "-m", "export"]
    assert ".:/workspace" in export["volumes"]


def test_image_tags_are_consistent():
    """Triton serves TensorRT engines only from the TensorRT that built them: same NGC release."""
    triton_base = dockerfile_base_image(ROOT / "deploy" / "triton.Dockerfile")
    export_base = dockerfile_base_image(ROOT / "deploy" / "export.Dockerfile")
    release = re.fullmatch(r"nvcr.io/nvidia/tritonserver:(\d\d\.\d\d)-py3", triton_base).group(1)
    assert export_base == f"nvcr.io/nvidia/pytorch:{release}-py3"
    services = load_compose()["services"]
    assert services["triton"]["image"].endswith(f":{release}")
    assert services["export"]["image"].endswith(f":{release}")
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
}
PROVIDED_BY_TRITON = {"triton_python_backend_utils"}


def test_triton_image_installs_every_import_of_the_python_models():
    model_files = [*ROOT.glob("model_repository/*/1/model.py"), *ROOT.glob("export/templates/*.py")]
    assert len(model_files) >= 3
    seen: set[Path] = set()
    imported = set().union(*(model_imports(path, seen) for path in model_files))
    third_party = imported - set(sys.stdlib_module_names) - PROVIDED_BY_TRITON - {"zsc_server", "__future__"}
    installed = pip_installed(ROOT / "deploy" / "triton.Dockerfile")
    for module in sorted(third_party):
        assert module in DISTRIBUTIONS, f"model code imports {module}: add it to DISTRIBUTIONS and the image"
        assert DISTRIBUTIONS[module] & installed, f"deploy/triton.Dockerfile does not install {module}"
    # zsc_server itself goes in as the project, and with numpy < 2 for the stub's ABI
    copied = " ".join(arg for keyword, arg in dockerfile_instructions(ROOT / "deploy" / "triton.Dockerfile")
                      if keyword == "COPY")
    assert "zsc_server" in copied
    assert "numpy==1." in (ROOT / "deploy" / "triton.Dockerfile").read_text()


def test_requirements_pins_match_the_image_where_they_share_a_package():
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M))
    image = (ROOT / "deploy" / "triton.Dockerfile").read_text()
    for package in ("numpy", "tokenizers", "grpcio"):
        assert f'"{package}=={pins[package]}"' in image, package


# ---------------------------------------------------------------------------- monitoring


def test_prometheus_scrapes_the_triton_metrics_port():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]]
    assert f"triton:{PORTS['metrics']}" in targets


def test_grafana_dashboard_uses_the_provisioned_datasource():
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "provider.yml").read_text())["providers"]
    grafana = load_compose()["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "triton.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "triton.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return set(re.findall(r"\b(?:nv|zsc)_[a-z_]+", " ".join(expressions)))


# ---------------------------------------------------------------------------- kubernetes


def test_k8s_manifests_reference_each_other():
    documents = k8s_documents()
    deployment, service, hpa = documents["Deployment"], documents["Service"], documents["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [container] = pod["spec"]["containers"]
    container_ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert container_ports == PORTS
    assert {port["name"]: port["port"] for port in service["spec"]["ports"]} == PORTS
    assert all(port["targetPort"] in container_ports for port in service["spec"]["ports"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    probe = container["livenessProbe"]["exec"]["command"]
    assert probe[:3] == ["python3", "-m", "zsc_server.probe"] and f"http://localhost:{PORTS['http']}" in probe
    assert container["livenessProbe"]["timeoutSeconds"] > float(probe[probe.index("--timeout-s") + 1])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1

    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == documents["PersistentVolumeClaim"]["metadata"]["name"]
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"

    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    monitor = documents["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} == {"metrics"}


def adapter_rules() -> list[dict]:
    return yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"]


def test_hpa_metric_is_defined_by_the_prometheus_adapter_rules():
    hpa = k8s_documents()["HorizontalPodAutoscaler"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    defined = {rule["name"]["as"] for rule in adapter_rules()}
    assert metric["pods"]["metric"]["name"] in defined


def adapter_metric_names() -> set[str]:
    queries = " ".join(rule["metricsQuery"] + rule["seriesQuery"] for rule in adapter_rules())
    return set(re.findall(r"\bnv_[a-z_]+", queries))


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_every_k8s_file_parses(path):
    assert all(document for document in yaml.safe_load_all(path.read_text()))


def test_locust_service_runs_this_scenario_against_triton():
    locust = load_compose()["services"]["locust"]
    command = locust["command"]
    assert command[command.index("--host") + 1] == f"http://triton:{PORTS['http']}"
    assert command[command.index("--grpc-url") + 1] == f"triton:{PORTS['grpc']}"
    assert "triton" in locust["depends_on"]
    dockerfile = ROOT / "deploy" / "locust.Dockerfile"
    [(_, entrypoint)] = [pair for pair in dockerfile_instructions(dockerfile) if pair[0] == "ENTRYPOINT"]
    locustfile = json.loads(entrypoint)[-1].removeprefix("/opt/zero-shot-triton/")
    assert (ROOT / locustfile).is_file()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M))
    assert dockerfile_base_image(dockerfile) == f"locustio/locust:{pins['locust']}"
    assert locust["image"].endswith(f":{pins['locust']}")


def test_webui_service_runs_zsc_webui_against_triton():
    webui = load_compose()["services"]["webui"]
    command = webui["command"]
    assert command[0] == "zsc"
    args = zsc_parser().parse_args(command[1:])
    assert (args.command, args.triton, args.protocol, args.host) == ("webui", f"triton:{PORTS['grpc']}", "grpc",
                                                                      "0.0.0.0")
    # published on loopback unless TRITON_BIND says otherwise, like Triton's own ports
    assert webui["ports"] == [f"${{TRITON_BIND:-127.0.0.1}}:{args.port}:{args.port}"]
    assert webui["depends_on"]["triton"]["condition"] == "service_healthy"
    dockerfile = ROOT / webui["build"]["context"] / webui["build"]["dockerfile"]
    assert dockerfile_cmd(dockerfile) == command
    instructions = dockerfile_instructions(dockerfile)
    assert ("COPY", "client /opt/zero-shot-triton/client") in instructions
    assert any(keyword == "RUN" and "/opt/zero-shot-triton/client[webui]" in argument
               for keyword, argument in instructions)
    assert ("EXPOSE", str(args.port)) in instructions
