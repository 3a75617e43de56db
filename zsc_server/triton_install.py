"""Which tritonserver and Python backend a server runs, and the environment its stubs need: the nvidia-pytriton
wheel's (no Docker), or the one `$TRITONSERVER` / `$TRITON_BACKENDS` name (the NGC image, the GPU host's
bundle). What the Python backend needs here:
- a backends dir holding ``libtriton_python.so`` and the stub built for this
  Python version (the wheel keeps stubs in ``python_backend_stubs/<X.Y>/``);
- this venv's ``bin`` first on ``PATH``: the stub finds its site-packages through it;
- libpython's directory and the wheel's bundled libs on ``LD_LIBRARY_PATH``;
- numpy < 2 in this venv (with numpy 2 the stub passes corrupted tensors).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from zsc_server.admin_api import ADMIN_KEY_ENV

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ServerError(RuntimeError):
    """tritonserver could not be started or did not become ready."""


def pytriton_dir() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("nvidia-pytriton is not installed in this environment: run `make setup`")
    return Path(list(spec.submodule_search_locations)[0])


def check_numpy() -> None:
    import numpy

    if int(numpy.__version__.split(".")[0]) >= 2:
        raise ServerError(
            f"numpy {numpy.__version__} is installed; the Triton Python-backend stub needs numpy < 2 "
            "(tensors arrive corrupted otherwise): pip install 'numpy<2'"
        )


def external_triton() -> tuple[Path, Path] | None:
    """A tritonserver installed outside this venv, as `$TRITONSERVER` (the binary) and `$TRITON_BACKENDS`
    (a backends dir whose python/ already holds this interpreter's stub): what the offline GPU-host
    bundle's setup script exports. None: use the pytriton wheel's."""
    binary, backends = os.environ.get("TRITONSERVER"), os.environ.get("TRITON_BACKENDS")
    if not binary:
        return None
    if not backends:
        raise ServerError("TRITONSERVER is set but TRITON_BACKENDS is not: set both, or neither")
    return Path(binary), Path(backends)


def triton_binary() -> Path:
    external = external_triton()
    return external[0] if external else pytriton_dir() / "tritonserver" / "bin" / "tritonserver"


def prepare_backends(target: Path) -> Path:
    """A backends dir with the Python backend and this interpreter's stub side by side."""
    external = external_triton()
    if external:
        return external[1]
    triton = pytriton_dir() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = triton / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"the pytriton wheel has no Python backend stub for Python {version}")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in (triton / "backends" / "python" / "libtriton_python.so",
                   triton / "backends" / "python" / "triton_python_backend_utils.py", stub):
        shutil.copy2(source, python_dir / source.name)
    return target


def server_environment(admin_secret: str = "") -> dict[str, str]:
    """admin_secret: given to the models (inherited by the stubs) for zsc_server.admin_api's checks."""
    env = dict(os.environ)
    if admin_secret:
        env[ADMIN_KEY_ENV] = admin_secret
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    wheel_libs = None if external_triton() else str(pytriton_dir().parent / "nvidia_pytriton.libs")
    libs = [sysconfig.get_config_var("LIBDIR"), wheel_libs]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")])
    # The Python models import zsc_server; make that work from a plain checkout too.
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")])
    return env
