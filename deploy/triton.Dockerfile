# Triton (NGC) plus exactly what the Python-backend models import:
#   preprocess / postprocess: numpy, tokenizers, zsc_server (this project)
#   encoder, runtime python-ort only: onnxruntime (GPU build here)
#   encoder, runtime python-torch only: torch (CUDA 12 build; about 2.5 GB of the image)
# tests/unit/test_deploy.py checks this list against the models' imports.
# NGC 25.07: the first release with the fixes for the HTTP crash on deeply nested JSON (CVE-2025-23310)
# and for the Python backend's shared-memory API (CVE-2025-23319, -23320, -23334). The local tests run
# tritonserver 2.51 (the nvidia-pytriton wheel, NGC 24.10), which has neither: there the launcher's fronts
# and restricted APIs are the defence (docs/limits-failures-security.md#threat-model).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.07-py3
FROM ${TRITON_IMAGE}

# numpy < 2: the Python-backend stub exchanges tensors through the numpy 1.x ABI.
RUN pip install --no-cache-dir "numpy==1.26.4" "tokenizers==0.23.3" "onnxruntime-gpu==1.20.1"
# torch 2.5.1 brings its own CUDA 12 runtime libraries, which the image's CUDA 12 driver stack supports.
RUN pip install --no-cache-dir "torch==2.5.1" "numpy==1.26.4"

# The launcher's gRPC front (zsc_server/grpc_front.py): Triton's gRPC sits behind it, on loopback.
RUN pip install --no-cache-dir "grpcio==1.85.4"

# The shared scoring / tokenization logic, installed without its CPU-side dependencies.
COPY pyproject.toml README.md /opt/zero-shot-triton/
COPY zsc_server /opt/zero-shot-triton/zsc_server
COPY export /opt/zero-shot-triton/export
RUN pip install --no-cache-dir --no-deps /opt/zero-shot-triton

# Runs as the image's unprivileged user; the model repository is mounted read-only at /models.
USER triton-server
EXPOSE 8000 8001 8002
# `make serve`'s launcher (zsc_server.serve) on this image's tritonserver: the same flags as every local
# server and test, HTTP and gRPC through the fronts that bound request bodies, a real classification every
# 15 s, a model whose Python-backend stub died reloaded in place, tritonserver restarted when it dies.
ENV TRITONSERVER=/opt/tritonserver/bin/tritonserver TRITON_BACKENDS=/opt/tritonserver/backends
CMD ["python3", "-m", "zsc_server.serve", "--repository=/models", "--host=0.0.0.0", \
     "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002", "--gpu-metrics"]
