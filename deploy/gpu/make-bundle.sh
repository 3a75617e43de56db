#!/usr/bin/env bash
# Build the offline bundle that a GPU host without network and without Triton needs for the GPU
# measurement (deploy/gpu/bench-on-gpu-host.sh; `make gpu-bundle` runs this):
#   DEST/tritonserver.tar.xz  tritonserver 2.51 from the nvidia-pytriton wheel: binary, bundled libs, the
#                             Python backend with its Python 3.12 stub, the response-cache library
#   DEST/wheels/*.whl         deploy/gpu/bundle-requirements.txt with its dependencies, for CPython 3.12,
#                             less what the host image already has (deploy/gpu/host-packages.txt)
# Usage: deploy/gpu/make-bundle.sh [DEST]      (default .gpu, which git ignores); needs pip's package index.
# On the GPU host: bash deploy/gpu/setup-host.sh DEST, then `source /tmp/triton-env.sh`.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEST=${1:-.gpu}
PYTHON=${PYTHON:-python3}
rm -rf "$DEST" && mkdir -p "$DEST/wheels" && DEST=$(cd "$DEST" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PLATFORMS=(--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64
           --platform manylinux_2_24_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)

echo "[bundle] tritonserver from the nvidia-pytriton wheel"
"$PYTHON" -m pip download -q --no-deps -d "$work" nvidia-pytriton==0.7.0
(cd "$work" && unzip -q nvidia_pytriton-*.whl)
S="$work"; T="$work/bundle/tritonserver"
mkdir -p "$T"/{bin,lib,backends/python,caches/local}
cp "$S/pytriton/tritonserver/bin/tritonserver" "$T/bin/"
cp "$S/pytriton/tritonserver/backends/python/"{libtriton_python.so,triton_python_backend_utils.py} "$T/backends/python/"
cp "$S/pytriton/tritonserver/python_backend_stubs/3.12/triton_python_backend_stub" "$T/backends/python/"
cp "$S/pytriton/tritonserver/caches/local/libtritoncache_local.so" "$T/caches/local/"
# every bundled lib but libpython3.x (the host's Python 3.12 provides its own)
find "$S/nvidia_pytriton.libs" -name '*.so*' ! -name 'libpython3*' -exec cp {} "$T/lib/" \;
tar cJf "$DEST/tritonserver.tar.xz" -C "$work/bundle" tritonserver

echo "[bundle] wheels for CPython 3.12: $HERE/bundle-requirements.txt and their dependencies"
"$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    "${PLATFORMS[@]}" -r "$HERE/bundle-requirements.txt" -d "$work/wheels"
"$PYTHON" - "$work/wheels" "$DEST/wheels" "$HERE/host-packages.txt" "$HERE/bundle-requirements.txt" <<'PY'
import re, shutil, sys
from pathlib import Path

def names(path):
    lines = (line.split("#")[0].strip() for line in Path(path).read_text().splitlines())
    return {re.split(r"[\[=<>! ;]", line)[0].lower().replace("_", "-") for line in lines if line}

source, dest, host, wanted = Path(sys.argv[1]), Path(sys.argv[2]), names(sys.argv[3]), names(sys.argv[4])
for wheel in sorted(source.glob("*.whl")):
    name = wheel.name.split("-")[0].lower().replace("_", "-")
    if name in host and name not in wanted:
        print(f"    {wheel.name}: the host has {name}")
    else:
        shutil.copy2(wheel, dest / wheel.name)
        print(f"    {wheel.name}: bundled")
PY
du -sh "$DEST"
size_kib=$(du -sk "$DEST" | cut -f1)
# the bundle travels with the repository (about 2 MiB) to the GPU host, where 64 MiB is the limit
if [ "$size_kib" -gt $((60 * 1024)) ]; then
    echo "[bundle] warning: $((size_kib / 1024)) MiB: with the repository it may not fit the 64 MiB a GPU host takes" >&2
fi
