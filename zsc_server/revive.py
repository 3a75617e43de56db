"""Bring back a model whose Python-backend stub died, without restarting tritonserver.

Triton 2.51's Python backend (r24.10) never restarts a dead stub and keeps reporting the model ready;
every request that reaches it then fails with "Stub process '<instance>' is not healthy". What does
bring it back (measured, tests/integration/test_faults.py): a load request for that model through the
model-repository API *with a config override*. Triton then loads a fresh copy with new stubs and swaps
it in while the ensemble stays up (about 0.5 s for the CPU demo encoder). A load without an override,
or with only the instance group changed, is an in-place update that keeps the dead stub.
The replaced copy never finishes unloading (Triton waits for its dead stub forever): it stays, unused,
until tritonserver exits, whose shutdown then runs out its exit timeout. Its stubs that were still alive
(other instances of the same model) are killed here, so that they give their memory back.

That API needs `--model-control-mode=explicit`. The launcher starts Triton with every model loaded at
start (`--load-model=*`) and the model-repository API (index, load, unload) restricted on HTTP and gRPC
to requests carrying ADMIN_HEADER with a secret made for that launch (zsc_server.admin_api): for anyone
without the secret the API is refused ("This API is restricted"), as with `--model-control-mode=none`.
Standard library only: this runs inside the Triton image as it is.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid

from zsc_server.admin_api import ADMIN_HEADER

# The config parameter whose new value makes a load a full reload (see the module docstring).
RELOAD_PARAMETER = "zsc_reload_id"
STUB_NAME = "triton_python_backend_stub"


class ReviveError(RuntimeError):
    """A dead stub's model could not be reloaded."""


# every model loaded at start; the model-repository API is restricted to the secret (zsc_server.admin_api)
MODEL_CONTROL_FLAGS = ("--model-control-mode=explicit", "--load-model=*")


def owner(instance: str, groups: dict[str, str]) -> str | None:
    """The model that `instance` belongs to, given {instance group name: model}. Triton names instances
    `<group>_<n>` (plus a device suffix on GPUs); the longest matching group wins (`enc_1` over `enc`)."""
    matches = [group for group in groups if instance.startswith(group + "_")]
    return groups[max(matches, key=len)] if matches else None


class Reviver:
    """Reloads composing models of an ensemble: those whose stubs died, or that an error names as dead."""

    def __init__(self, http_url: str, secret: str, server_pid: int, ensemble: str = "zero_shot",
                 timeout_s: float = 300.0) -> None:
        self.base = f"http://{http_url}" if "://" not in http_url else http_url
        self.secret, self.server_pid, self.ensemble, self.timeout_s = secret, server_pid, ensemble, timeout_s

    def revive(self, instances: set[str] | frozenset[str]) -> list[str]:
        """Reload every model of `instances` (whose stubs Triton said died: probe.Health.dead_stubs); the models
        reloaded, [] if none. Raises ReviveError when a reload fails or an instance belongs to no composing
        model."""
        if not instances:
            return []
        groups = self._instance_groups()
        models = {}
        for instance in sorted(instances):
            model = owner(instance, groups)
            if model is None:
                raise ReviveError(f"stub {instance!r} belongs to no model of ensemble {self.ensemble!r}")
            models[model] = None
        return self.replace(list(models))

    def replace(self, models: list[str]) -> list[str]:
        """Reload `models`, then kill the replaced copies' stubs that were still alive; returns `models`."""
        for model in models:
            replaced = stub_pids(self.server_pid, model)
            self.reload(model)
            for pid in replaced:
                kill(pid)
        return models

    def reload(self, model: str) -> None:
        config = self._get(f"/v2/models/{model}/config")
        parameters = dict(config.get("parameters") or {})
        parameters[RELOAD_PARAMETER] = {"string_value": uuid.uuid4().hex}
        body = {"parameters": {"config": json.dumps(dict(config, parameters=parameters))}}
        request = urllib.request.Request(
            f"{self.base}/v2/repository/models/{model}/load", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", ADMIN_HEADER: self.secret}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s):
                pass
        except urllib.error.HTTPError as exc:
            raise ReviveError(f"reloading {model}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}") \
                from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ReviveError(f"reloading {model}: {exc}") from exc

    def _instance_groups(self) -> dict[str, str]:
        steps = self._get(f"/v2/models/{self.ensemble}/config").get("ensemble_scheduling", {}).get("step", [])
        groups = {}
        for model in {step["model_name"] for step in steps}:
            for group in self._get(f"/v2/models/{model}/config").get("instance_group", []):
                groups[group["name"]] = model
        return groups

    def _get(self, path: str) -> dict:
        try:
            with urllib.request.urlopen(f"{self.base}{path}", timeout=30) as response:
                return json.load(response)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ReviveError(f"GET {path}: {exc}") from exc


def process_state(pid: int | str) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process from /proc/<pid>/stat; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state, parent = stat.read().rsplit(")", 1)[1].split()[:2]  # after "pid (name)"
    except OSError:
        return None
    return state, int(parent)


def children(server_pid: int) -> dict[int, str]:
    """{pid: state letter} of the child processes of `server_pid`, from /proc."""
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (state := process_state(entry.name)) is not None and state[1] == server_pid:
            found[int(entry.name)] = state[0]
    return found


def dead_stubs(server_pid: int) -> list[int]:
    """The Python-backend stubs of tritonserver `server_pid` that died and that it has not reaped (zombies,
    which have no command line left: known by their name, as the kernel keeps it)."""
    dead = []
    for pid, state in children(server_pid).items():
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if state == "Z" and comm.read().strip() == STUB_NAME[:15]:  # the kernel keeps 15 characters
                    dead.append(pid)
        except OSError:
            continue
    return dead


def stub_models(server_pid: int) -> dict[int, str]:
    """{pid: model} of the live Python-backend stubs under tritonserver `server_pid`, from /proc: a stub's
    command line is the stub, <repository>/<model>/<version>/model.py, ..."""
    stubs = {}
    for pid, state in children(server_pid).items():
        if state == "Z":
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                args = cmdline.read().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if len(args) > 1 and args[0].endswith(STUB_NAME):
            stubs[pid] = os.path.basename(os.path.dirname(os.path.dirname(args[1])))
    return stubs


def stub_pids(server_pid: int, model: str) -> list[int]:
    """The live Python-backend stubs of `model` under tritonserver `server_pid`."""
    return [pid for pid, owner_model in stub_models(server_pid).items() if owner_model == model]


def kill(pid: int, timeout_s: float = 5.0) -> None:
    """SIGKILL `pid` and wait until it is gone or a zombie, so that no later look at the stubs sees it
    alive (and takes its end for a new death)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = process_state(pid)
        if state is None or state[0] == "Z":
            return
        time.sleep(0.01)
