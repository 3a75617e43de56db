#!/usr/bin/env bash
# On the GPU host: unpack the bundle that deploy/gpu/make-bundle.sh built and write /tmp/triton-env.sh.
# After `source /tmp/triton-env.sh`:
#   $TRITONSERVER is the server binary and $TRITON_BACKENDS its backend directory (what zsc_server.serve
#   runs when they are set); python3 is the serving venv (/tmp/tv), whose numpy is 1.26.4 (what the
#   Python-backend stub needs) and which sees the host's own packages (torch, tokenizers) behind the bundle's;
#   $MODEL_PYTHON is the model venv (/tmp/tm): the bundle's clients and the host's packages with the host's
#   numpy 2, which its transformers needs (through scipy) to export and to build checkpoints.
# Usage: bash deploy/gpu/setup-host.sh BUNDLE_DIR
set -euo pipefail
B=${1:?usage: setup-host.sh BUNDLE_DIR}
[ -f "$B/tritonserver.tar.xz" ] || { echo "no $B/tritonserver.tar.xz: build the bundle with deploy/gpu/make-bundle.sh" >&2; exit 2; }
rm -rf /tmp/ts /tmp/tv /tmp/tm /tmp/tv-numpy1 && mkdir -p /tmp/ts && tar xJf "$B/tritonserver.tar.xz" -C /tmp/ts
BASE_SITE=$(python3 -c "import site; print(site.getsitepackages()[0])")
LIBDIR=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
python3 -m venv --without-pip /tmp/tv
python3 -m venv --without-pip /tmp/tm
V_SITE=$(/tmp/tv/bin/python3 -c "import site; print(site.getsitepackages()[0])")
M_SITE=$(/tmp/tm/bin/python3 -c "import site; print(site.getsitepackages()[0])")
# numpy 1.26 in a folder of its own: the serving venv puts it ahead of the host's numpy 2, the model venv leaves it out
mapfile -t numpy_wheels < <(find "$B/wheels" -name 'numpy-*.whl')
mapfile -t other_wheels < <(find "$B/wheels" -name '*.whl' ! -name 'numpy-*.whl')
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/tv-numpy1 "${numpy_wheels[@]}"
python3 -m pip install -q --no-index --no-deps --no-compile --target "$V_SITE" "${other_wheels[@]}"
# .pth files are read in name order, and each appends its folder: bundle, then numpy 1.26, then the host
echo /tmp/tv-numpy1 > "$V_SITE/aa-numpy1.pth"
echo "$BASE_SITE" > "$V_SITE/zz-host-site.pth"
echo "$V_SITE" > "$M_SITE/aa-bundle.pth"
echo "$BASE_SITE" > "$M_SITE/zz-host-site.pth"
cat > /tmp/triton-env.sh <<ENV
export PATH=/tmp/tv/bin:\$PATH
export LD_LIBRARY_PATH=$LIBDIR:/tmp/ts/tritonserver/lib:\${LD_LIBRARY_PATH:-}
export TRITONSERVER=/tmp/ts/tritonserver/bin/tritonserver
export TRITON_BACKENDS=/tmp/ts/tritonserver/backends
export MODEL_PYTHON=/tmp/tm/bin/python3
ENV
/tmp/tv/bin/python3 -c "import numpy, tritonclient.grpc; print('serving side: numpy', numpy.__version__, '- tritonclient ok')"
/tmp/tm/bin/python3 -c "import numpy, tritonclient.grpc; print('model side: numpy', numpy.__version__, '- tritonclient ok')"
