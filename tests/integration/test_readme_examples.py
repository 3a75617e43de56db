"""README's CLI and curl examples, run as written against `make export`'s default model (the offline English
MiniLM): they must give a sensible, untied ranking, as a newcomer following the README would see it. The
clients page's Python example runs as written too."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
CLIENTS = README.parent / "docs" / "clients.md"


def block_after(heading: str, page: Path = README, language: str = "bash") -> str:
    """The first ```<language> block after `heading` in `page`."""
    text = page.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def run(command: str) -> str:
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_readme_cli_example_ranks_the_offline_models_labels(embedding):
    [classify] = [line for line in block_after("### CLI").splitlines() if " classify " in line]
    zsc = str(Path(sys.executable).parent / "zsc")
    command = classify.replace(".venv/bin/zsc classify", f"{zsc} classify --json --url {embedding.server.grpc_url}")
    answer = json.loads(run(command))
    assert answer["labels"][0] == "delivery", answer
    assert len(set(answer["scores"])) == len(answer["scores"]), "tied scores"


def test_readme_curl_example_ranks_the_offline_models_labels(embedding):
    command = block_after("### curl").replace("localhost:8000", embedding.server.http_url)
    outputs = {output["name"]: output["data"] for output in json.loads(run(command))["outputs"]}
    assert outputs["LABELS"][0] == "delivery", outputs
    assert len(set(outputs["SCORES"])) == len(outputs["SCORES"]), "tied scores"


def test_clients_page_python_example_runs_as_written(embedding):
    code = block_after("## Client", CLIENTS, "python").replace("localhost:8001", embedding.server.grpc_url)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and lines[1] in ("咨询", "投诉", "建议"), done.stdout
