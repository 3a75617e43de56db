"""Which compose stack serves an exported repository, written into compose's `.env` (`make export` runs it).

`docker compose up` reads `.env` beside docker-compose.yml: COMPOSE_FILE picks the stack, so that
`make export && docker compose up -d` serves what was exported on either kind of host.
- CPU: docker-compose.yml alone (Debian images, the nvidia-pytriton wheel's tritonserver), which serves
  the python-ort and python-ov runtimes on the CPU, FP32 or INT8;
- GPU: docker-compose.yml with deploy/compose.gpu.yml (NGC images, the GPU reserved), for every other
  export: python-torch, the native onnxruntime, tensorrt and openvino backends (the wheel's tritonserver has
  none of them), or python-ort on a GPU.
ZSC_EXPORT_DIGEST, a hash of the repository's configs and export facts, reaches the triton service as an
environment variable: compose recreates a container whose configuration changed, so `docker compose up -d`
after a new export restarts tritonserver on it (Triton reads its model files once, at start).
The other lines of an existing `.env` (TRITON_BIND, ...) are kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

from export.repository import ENCODER, SOURCE_REPOSITORY, Runtime

STACKS = {
    "cpu": "docker-compose.yml",
    "gpu": "docker-compose.yml:deploy/compose.gpu.yml",
}


def stack_for(repository: Path) -> tuple[str, str]:
    """('cpu' or 'gpu', why) for the export in `repository`."""
    encoder = repository / ENCODER
    try:
        runtime = json.loads((encoder / "export.json").read_text(encoding="utf-8"))["runtime"]
        config = (encoder / "config.pbtxt").read_text(encoding="utf-8")
    except (OSError, ValueError, KeyError):
        raise ValueError(f"{repository} has no exported model: run `make export` first") from None
    on_gpu = re.search(r"kind:\s*KIND_GPU", config) is not None
    if runtime in (Runtime.PYTHON_ORT.value, Runtime.PYTHON_OV.value) and not on_gpu:
        return "cpu", f"the encoder runs {runtime} on the CPU"
    return "gpu", f"the encoder runs {runtime} on {'a GPU' if on_gpu else 'an NGC backend'}"


def export_digest(repository: Path) -> str:
    """A hash of every config.pbtxt and export.json in `repository`: it changes with each export."""
    digest = hashlib.sha256()
    for path in sorted([*repository.glob("*/config.pbtxt"), *repository.glob("*/export.json")]):
        digest.update(path.relative_to(repository).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def env_lines(existing: str, values: dict[str, str]) -> str:
    """`existing` .env text with each key of `values` set (replaced in place, or appended)."""
    lines, seen = [], set()
    for line in existing.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in values:
            line, seen = f"{key}={values[key]}", seen | {key}
        lines.append(line)
    if not existing:
        lines.append("# Written by `make export` (python -m export.compose_env): the compose stack that serves "
                     "the export. Other lines are kept.")
    lines += [f"{key}={value}" for key, value in values.items() if key not in seen]
    return "\n".join(lines) + "\n"


def write_env(repository: Path, env_file: Path) -> str:
    """Set COMPOSE_FILE (and the repository compose mounts) in `env_file`; returns what it says."""
    stack, why = stack_for(repository)
    mount = repository.resolve()
    try:
        mount = f"./{mount.relative_to(env_file.resolve().parent)}"
    except ValueError:
        mount = str(mount)
    existing = env_file.read_text(encoding="utf-8") if env_file.is_file() else ""
    env_file.write_text(env_lines(existing, {"COMPOSE_FILE": STACKS[stack], "ZSC_MODEL_REPOSITORY": mount,
                                             "ZSC_EXPORT_DIGEST": export_digest(repository)}), encoding="utf-8")
    return f"{stack.upper()} stack ({STACKS[stack].replace(':', ' + ')}): {why}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.compose_env",
        description="Write into compose's .env which stack (CPU or GPU) serves the exported repository, so that "
                    "`docker compose up -d` serves it.")
    parser.add_argument("--repository", type=Path, default=SOURCE_REPOSITORY)
    parser.add_argument("--env-file", type=Path, default=SOURCE_REPOSITORY.parent / ".env",
                        help="compose's .env, beside docker-compose.yml (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        said = write_env(args.repository, args.env_file)
    except ValueError as exc:
        print(f"[compose] {exc}", file=sys.stderr)
        return 1
    print(f"[compose] {args.env_file.name}: `docker compose up -d` starts the {said} (or restarts a running "
          "one on this export)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
