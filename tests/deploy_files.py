"""Readers of the deployment files for the tests that check them without Docker or Kubernetes:
docker-compose.yml (with compose's variable defaults and the GPU overlay merged as compose merges it), the
Dockerfiles, the requirement files of deploy/requirements/, the Kubernetes manifests, and the metric names
that the Grafana dashboard and the autoscaler's adapter query."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "deploy" / "requirements"
GPU_OVERLAY = ROOT / "deploy" / "compose.gpu.yml"
K8S = ROOT / "deploy" / "k8s"
GRAFANA_DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "triton.json"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR}, through nested mappings and lists."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, operator, default = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in env and (env[name] or operator != ":-"):
            return env[name]
        return default

    return re.sub(r"\$\{(\w+)(:-|-)?([^}]*)\}", substitute, value)


def merge(base, overlay):
    """Compose's merge of one file over another: mappings key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return overlay


def load_compose(stack: str = "cpu", env: dict[str, str] | None = None, raw: bool = False) -> dict:
    """The compose model of `stack` (cpu: docker-compose.yml; gpu: with deploy/compose.gpu.yml), variables
    at their defaults unless `env` sets them; raw: docker-compose.yml as written, nothing interpolated."""
    model = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    if raw:
        return model
    if stack == "gpu":
        model = merge(model, yaml.safe_load(GPU_OVERLAY.read_text()))
    return interpolate(model, env or {})


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


def dockerfile_exec_form(path: Path, instruction: str) -> list[str]:
    [value] = [json.loads(arg) for keyword, arg in dockerfile_instructions(path) if keyword == instruction]
    return value


def requirement_pins(path: Path) -> dict[str, str]:
    """name -> pinned version of a requirement file, following its -r includes."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(requirement_pins(path.parent / line[3:].strip()))
        elif "==" in line:
            name, version = line.split("==")
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return pins


def project_pins() -> dict[str, str]:
    """requirements.txt: the versions that work together on the development machines."""
    return requirement_pins(ROOT / "requirements.txt")


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


def dashboard_metric_names() -> set[str]:
    dashboard = json.loads(GRAFANA_DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return set(re.findall(r"\b(?:nv|zsc)_[a-z_]+", " ".join(expressions)))


def adapter_rules() -> list[dict]:
    return yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"]


def adapter_metric_names() -> set[str]:
    queries = " ".join(rule["metricsQuery"] + rule["seriesQuery"] for rule in adapter_rules())
    return set(re.findall(r"\bnv_[a-z_]+", queries))
