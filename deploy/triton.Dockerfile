# The Triton image, CPU or GPU from the same lines; only the build arguments differ
# (docker-compose.yml: CPU; deploy/compose.gpu.yml: GPU; `make export` picks one in .env):
#   CPU: a Debian base; tritonserver 2.51 and its Python backend from the nvidia-pytriton wheel
#        (deploy/requirements/triton-cpu.txt), runtimes python-ov and python-ort, FP32 or INT8.
#   GPU: NGC tritonserver 25.07, which brings tritonserver and its ONNX Runtime / TensorRT backends
#        (deploy/requirements/triton-gpu.txt adds onnxruntime-gpu and CUDA torch for the Python runtimes).
# NGC 25.07: the first release with the fixes for the HTTP crash on deeply nested JSON (CVE-2025-23310)
# and for the Python backend's shared-memory API (CVE-2025-23319, -23320, -23334). tritonserver 2.51 (the
# wheel's, NGC 24.10) has neither: there the launcher's fronts and restricted APIs are the defence
# (docs/limits-failures-security.md#threat-model).
# tests/unit/test_deploy.py checks the requirement files against the models' imports.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS base
# what the base lacks: python3 (with venv, and the shared libpython the Python-backend stub links), and haproxy
# for the launcher's edge proxy (zsc_server.edge; without it the launcher's fronts refuse overload themselves)
ARG OS_PACKAGES="python3 python3-venv libpython3.11 ca-certificates haproxy"
COPY deploy/docker/os-packages.sh /usr/local/lib/zero-shot-triton/
RUN sh /usr/local/lib/zero-shot-triton/os-packages.sh \
    && { id -u triton-server >/dev/null 2>&1 || useradd --system --create-home triton-server; }

FROM base AS venv
ARG REQUIREMENTS=triton-cpu.txt
ARG PIP_NO_INDEX=
COPY deploy/wheelhouse /wheelhouse
COPY deploy/requirements /opt/zero-shot-triton/deploy/requirements
COPY deploy/docker/python-env.sh /usr/local/lib/zero-shot-triton/
# the project itself: the launcher and the modules the Python-backend models import
COPY pyproject.toml README.md /opt/zero-shot-triton/
COPY zsc_server /opt/zero-shot-triton/zsc_server
COPY export /opt/zero-shot-triton/export
RUN sh /usr/local/lib/zero-shot-triton/python-env.sh \
    /opt/zero-shot-triton/deploy/requirements/${REQUIREMENTS} /opt/zero-shot-triton

# the environment alone, without the wheels it was installed from
FROM base
COPY --from=venv /opt/venv /opt/venv
# empty (CPU): the wheel's tritonserver; GPU: the NGC image's
ARG TRITONSERVER=
ARG TRITON_BACKENDS=
# the stub finds its site-packages through the first python3 on PATH
ENV PATH=/opt/venv/bin:$PATH TRITONSERVER=${TRITONSERVER} TRITON_BACKENDS=${TRITON_BACKENDS}

# Runs as an unprivileged user; the model repository is mounted read-only at /models.
USER triton-server
EXPOSE 8000 8001 8002
# `make serve`'s launcher (zsc_server.serve) on this image's tritonserver: the same flags as every local
# server and test, HTTP and gRPC through the fronts that bound request bodies, a real classification every
# 15 s, a model whose Python-backend stub died reloaded in place, tritonserver restarted when it dies.
CMD ["python3", "-m", "zsc_server.serve", "--repository=/models", "--host=0.0.0.0", \
     "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002", "--gpu-metrics"]
