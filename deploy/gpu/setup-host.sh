#!/usr/bin/env bash
# On the GPU host: unpack the bundle that deploy/gpu/make-bundle.sh built and write /tmp/triton-env.sh.
# After `source /tmp/triton-env.sh`:
#   $TRITONSERVER is the server binary and $TRITON_BACKENDS its backend directory (what zsc_server.serve
#   runs when they are set); python3 is a venv whose numpy is 1.26.4 (what the Python-backend stub needs)
#   and which sees the host's own packages (torch, transformers, tokenizers, onnxruntime) behind the bundle's.
# Usage: bash deploy/gpu/setup-host.sh BUNDLE_DIR
set -euo pipefail
B=${1:?usage: setup-host.sh BUNDLE_DIR}
[ -f "$B/tritonserver.tar.xz" ] || { echo "no $B/tritonserver.tar.xz: build the bundle with deploy/gpu/make-bundle.sh" >&2; exit 2; }
rm -rf /tmp/ts /tmp/tv && mkdir -p /tmp/ts && tar xJf "$B/tritonserver.tar.xz" -C /tmp/ts
BASE_SITE=$(python3 -c "import site; print(site.getsitepackages()[0])")
LIBDIR=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
python3 -m venv --without-pip /tmp/tv
V_SITE=$(/tmp/tv/bin/python3 -c "import site; print(site.getsitepackages()[0])")
python3 -m pip install -q --no-index --no-deps --no-compile --target "$V_SITE" "$B"/wheels/*.whl
echo "$BASE_SITE" > "$V_SITE/zz-host-site.pth"   # the host's packages come after the bundle's
cat > /tmp/triton-env.sh <<ENV
export PATH=/tmp/tv/bin:\$PATH
export LD_LIBRARY_PATH=$LIBDIR:/tmp/ts/tritonserver/lib:\${LD_LIBRARY_PATH:-}
export TRITONSERVER=/tmp/ts/tritonserver/bin/tritonserver
export TRITON_BACKENDS=/tmp/ts/tritonserver/backends
ENV
/tmp/tv/bin/python3 -c "import numpy, tritonclient.grpc; print('numpy', numpy.__version__, '- tritonclient ok')"
