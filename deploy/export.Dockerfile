# `python -m export` on the mounted checkout: `docker compose run --rm export --model ...`.
# CPU (docker-compose.yml): a Debian base with torch's CPU build (deploy/requirements/export-cpu.txt).
# GPU (deploy/compose.gpu.yml): NGC PyTorch 25.07, whose torch and TensorRT match the Triton image that
# serves the engines (the same NGC release), plus deploy/requirements/export-gpu.txt.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS base
ARG OS_PACKAGES="python3 python3-venv ca-certificates"
COPY deploy/docker/os-packages.sh /usr/local/lib/zero-shot-triton/
RUN sh /usr/local/lib/zero-shot-triton/os-packages.sh

FROM base AS venv
ARG REQUIREMENTS=export-cpu.txt
ARG PIP_NO_INDEX=
COPY deploy/wheelhouse /wheelhouse
COPY deploy/requirements /opt/zero-shot-triton/deploy/requirements
COPY deploy/docker/python-env.sh /usr/local/lib/zero-shot-triton/
RUN sh /usr/local/lib/zero-shot-triton/python-env.sh /opt/zero-shot-triton/deploy/requirements/${REQUIREMENTS}

FROM base
COPY --from=venv /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /workspace
ENTRYPOINT ["python3", "-m", "export"]
CMD ["--help"]
