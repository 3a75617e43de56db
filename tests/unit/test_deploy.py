"""The Kubernetes manifests, Prometheus and Grafana files, and the health probes of every deployment, read
without Kubernetes or Docker: names, ports and metrics shared between them. (Compose and the Dockerfiles:
tests/unit/test_compose_files.py.)"""

from __future__ import annotations

import json

import pytest
import yaml

from export.cli import build_parser as export_parser
from tests.deploy_files import K8S, PORTS, ROOT, adapter_rules, k8s_documents, load_compose

# ---------------------------------------------------------------------------- health probes


def probe_timeout(command: list[str]) -> float:
    assert command[command.index("python3"):][:3] == ["python3", "-m", "zsc_server.probe"]
    return float(command[command.index("--timeout-s") + 1])


def test_health_probes_outwait_the_queue_timeout_so_a_busy_server_passes():
    """A probe that gives up before the encoder's queue refuses it would call an overloaded server dead."""
    from zsc_server.batching_policy import QUEUE_BUDGET_MS
    from zsc_server.supervisor import PROBE_TIMEOUT_S

    # the longest budget `--queue-timeout-ms auto` can choose
    assert export_parser().parse_args(["--model", "x"]).queue_timeout_ms == "auto"
    queue_timeout_s = QUEUE_BUDGET_MS[1] / 1000
    compose = load_compose("cpu")["services"]["triton"]["healthcheck"]
    [container] = k8s_documents()["Deployment"]["spec"]["template"]["spec"]["containers"]
    liveness = container["livenessProbe"]
    for timeout_s in (probe_timeout(compose["test"]), probe_timeout(liveness["exec"]["command"]), PROBE_TIMEOUT_S):
        assert timeout_s == PROBE_TIMEOUT_S > queue_timeout_s
    assert float(compose["timeout"].removesuffix("s")) > PROBE_TIMEOUT_S
    assert liveness["timeoutSeconds"] > PROBE_TIMEOUT_S


def test_health_probes_run_below_tritonserver_so_they_never_take_the_encoders_cpu():
    """At nice 0 a probe's Python outranks the niced tritonserver on a busy core: requests are refused while it
    runs (measured in the compose stack on one core: loadtest/results/overload-trials-*/README.md)."""
    from zsc_server.serve import SERVER_NICE

    compose = load_compose("cpu")["services"]["triton"]["healthcheck"]["test"][1:]
    [container] = k8s_documents()["Deployment"]["spec"]["template"]["spec"]["containers"]
    for command in (compose, container["livenessProbe"]["exec"]["command"]):
        assert command[:2] == ["nice", "-n"] and int(command[2]) > SERVER_NICE
        assert command[3:6] == ["python3", "-m", "zsc_server.probe"]


# ---------------------------------------------------------------------------- monitoring


def test_prometheus_scrapes_the_triton_metrics_port():
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]]
    assert f"triton:{PORTS['metrics']}" in targets


def test_grafana_dashboard_uses_the_provisioned_datasource():
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "provider.yml").read_text())["providers"]
    grafana = load_compose("cpu")["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "triton.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]


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
    assert "zsc_server.probe" in probe and f"http://localhost:{PORTS['http']}" in probe
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


def test_hpa_metric_is_defined_by_the_prometheus_adapter_rules():
    hpa = k8s_documents()["HorizontalPodAutoscaler"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    defined = {rule["name"]["as"] for rule in adapter_rules()}
    assert metric["pods"]["metric"]["name"] in defined


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_every_k8s_file_parses(path):
    assert all(document for document in yaml.safe_load_all(path.read_text()))


def test_the_makefiles_max_length_default_is_one_the_demo_and_export_take():
    """`make demo` and `make export` pass --max-length $(MAX_LENGTH); its default must parse for both."""
    import re

    from deploy.demo import main as demo_main

    default = re.search(r"^MAX_LENGTH \?= (\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    assert export_parser().parse_args(["--model", "m", "--max-length", default]).max_length == default
    with pytest.raises(SystemExit) as shown:  # --help parses every argument's default, then exits 0
        demo_main(["--max-length", default, "--help"])
    assert shown.value.code == 0
