"""Writing an export to disk: the configs, the committed Python models, the encoder's files for its runtime,
all assembled in a staging directory and swapped into the served repository only when complete."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from export.errors import ExportError
from export.repository import ENCODER, ENSEMBLE, POSTPROCESS, PREPROCESS, SOURCE_REPOSITORY, Runtime, to_pbtxt

TEMPLATES = Path(__file__).resolve().parent / "templates"


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks (encoder files reach gigabytes): the export's identity."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_config(repository: Path, config: dict) -> Path:
    path = repository / config["name"] / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_pbtxt(config), encoding="utf-8")
    return path


def check_writable(repository: Path) -> None:
    """Before the work, not after it: the repository is a directory, or can become one."""
    if repository.exists() and not repository.is_dir():
        raise ExportError(f"--repository {repository} is a file, not a directory")
    # the staging folder goes beside the repository (staged_repository), so its parent must take it too
    existing = next(path for path in (repository.absolute().parent, *repository.absolute().parents) if path.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f"--repository {repository}: cannot write in {existing}")


@contextlib.contextmanager
def staged_repository(repository: Path):
    """Yield an empty staging dir beside `repository`; on success, swap each model it holds into
    `repository` with renames (same filesystem: fast, nothing half-copied is ever visible). On failure or
    interruption the staging dir is removed and `repository` is untouched. Models of the repository that
    the staging dir does not hold are left alone."""
    repository = repository.resolve()
    repository.parent.mkdir(parents=True, exist_ok=True)
    leftovers = (f".{repository.name}.staging-", f".{repository.name}.retired-")  # of a killed export
    for leftover in repository.parent.iterdir():
        if leftover.name.startswith(leftovers):
            shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{repository.name}.staging-", dir=repository.parent))
    retired = staging.with_name(staging.name.replace(".staging-", ".retired-"))
    try:
        yield staging
        repository.mkdir(exist_ok=True)
        retired.mkdir()
        for model in sorted(p for p in staging.iterdir() if p.is_dir()):
            current = repository / model.name
            incoming = _same_filesystem_copy(model, repository)
            if current.exists():
                current.rename(retired / model.name)
            incoming.rename(current)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def _same_filesystem_copy(model: Path, repository: Path) -> Path:
    """`model` itself when it can be renamed into `repository`; otherwise (the repository is a mount,
    e.g. a Kubernetes volume) a hidden copy inside it, so that the final step is still one rename."""
    if model.stat().st_dev == repository.stat().st_dev:
        return model
    incoming = repository / f".{model.name}.incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    shutil.copytree(model, incoming)
    return incoming


def copy_static_models(repository: Path) -> None:
    """The committed Python models, when exporting somewhere other than the source repository."""
    for model in (PREPROCESS, POSTPROCESS):
        target = repository / model / "1" / "model.py"
        source = SOURCE_REPOSITORY / model / "1" / "model.py"
        if target.resolve() != source.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    (repository / ENSEMBLE / "1").mkdir(parents=True, exist_ok=True)
    # the ensemble's version dir has no files; git keeps it in the source repository through .gitkeep
    (repository / ENSEMBLE / "1" / ".gitkeep").touch()


ENCODER_FILES = {
    Runtime.PYTHON_ORT: ("model.onnx", "python_ort_model.py"),
    Runtime.ONNXRUNTIME: ("model.onnx", None),
    Runtime.TENSORRT: ("model.plan", None),
    Runtime.PYTHON_TORCH: ("model.pt", "python_torch_model.py"),
    Runtime.PYTHON_OV: ("model.xml", "python_ov_model.py"),  # and its weights beside it, model.bin
    Runtime.OPENVINO: ("model.xml", None),
}


def write_encoder_files(repository: Path, runtime: Runtime, artifact: Path) -> Path:
    """Place the runtime's model file (model.onnx / model.plan / model.pt) in encoder/1/, with the
    Python-backend wrapper where the runtime is a Python model."""
    filename, template = ENCODER_FILES[runtime]
    version_dir = repository / ENCODER / "1"
    if version_dir.exists():
        shutil.rmtree(version_dir)
    version_dir.mkdir(parents=True)
    shutil.move(str(artifact), version_dir / filename)
    weights = artifact.with_suffix(".bin")  # an OpenVINO IR's other half
    if runtime.openvino:
        shutil.move(str(weights), version_dir / Path(filename).with_suffix(".bin"))
    if template:
        shutil.copyfile(TEMPLATES / template, version_dir / "model.py")
    return version_dir
