#!/bin/sh
# python-env.sh REQUIREMENTS [PROJECT_DIR ...]: the virtual environment /opt/venv with REQUIREMENTS (a file
# of deploy/requirements/), then each PROJECT_DIR without its dependencies (they are in REQUIREMENTS).
# Wheels come from /wheelhouse (`make wheelhouse`) first, then from the package index, unless the build
# argument PIP_NO_INDEX=1 rules the index out (an offline build: every wheel must be in the wheelhouse).
# --system-site-packages: what the base image installed (NGC PyTorch's torch) stays importable.
set -eu
requirements=$1
shift
python3 -m venv --system-site-packages /opt/venv
pip="/opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --find-links /wheelhouse"
$pip -r "$requirements"
[ $# -eq 0 ] || $pip --no-deps "$@"
