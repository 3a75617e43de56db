"""The reference pipelines that need a venv of their own: ModelScope and transformers 4.57 in .venv-modelscope,
Knowledgator's gliclass in .venv-gliclass. `make test` builds both (a failed install fails it, as in CI) and
points the tests to their interpreters (ZSC_MODELSCOPE_PYTHON, ZSC_GLICLASS_PYTHON); run alone without
them, the tests that need one skip and say which `make setup-*` creates it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def venv_python(variable: str) -> str | None:
    """The interpreter the environment variable names; None where it is unset or not there."""
    python = os.environ.get(variable)
    return python if python and Path(python).exists() else None


def require_venv_python(variable: str, missing: str) -> str:
    """venv_python, or skip the calling test with `missing` (what to run to get it)."""
    python = venv_python(variable)
    if python is None:
        pytest.skip(missing)
    return python


def run_json(python: str, script: Path, request, *, repository_on_path: bool = False, timeout: float = 600):
    """Run `script` with `python`, `request` as JSON on its stdin; its stdout parsed as JSON.
    repository_on_path: the repository root on PYTHONPATH, for a script that imports this repository's modules."""
    env = None
    if repository_on_path:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([python, str(script)], input=json.dumps(request), capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)
