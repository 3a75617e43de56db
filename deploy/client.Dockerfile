# The client image, for the webui and locust services: zsc_client with its WebUI (`zsc webui`), and Locust
# with this project's scenario (loadtest/locustfile.py). No model, no GPU: the same image on every host.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS base
ARG OS_PACKAGES="python3 python3-venv ca-certificates"
COPY deploy/docker/os-packages.sh /usr/local/lib/zero-shot-triton/
RUN sh /usr/local/lib/zero-shot-triton/os-packages.sh

FROM base AS venv
ARG REQUIREMENTS=client.txt
ARG PIP_NO_INDEX=
COPY deploy/wheelhouse /wheelhouse
COPY deploy/requirements /opt/zero-shot-triton/deploy/requirements
COPY deploy/docker/python-env.sh /usr/local/lib/zero-shot-triton/
COPY client /opt/zero-shot-triton/client
RUN sh /usr/local/lib/zero-shot-triton/python-env.sh \
    /opt/zero-shot-triton/deploy/requirements/${REQUIREMENTS} /opt/zero-shot-triton/client[webui]

FROM base
COPY --from=venv /opt/venv /opt/venv
COPY loadtest /opt/zero-shot-triton/loadtest
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/opt/zero-shot-triton
USER nobody
WORKDIR /opt/zero-shot-triton
EXPOSE 7860 8089
CMD ["zsc", "webui", "--triton", "triton:8001", "--host", "0.0.0.0", "--port", "7860"]
