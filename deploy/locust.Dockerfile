# Locust with this project's scenario (loadtest/locustfile.py) and its client (zsc_client, tritonclient
# for the gRPC user). `docker compose --profile loadtest up locust` serves Locust's web UI on :8089.
ARG LOCUST_IMAGE=locustio/locust:2.47.0
FROM ${LOCUST_IMAGE}

USER root
COPY client /opt/zero-shot-triton/client
COPY loadtest /opt/zero-shot-triton/loadtest
RUN pip install --no-cache-dir /opt/zero-shot-triton/client
USER locust

ENV PYTHONPATH=/opt/zero-shot-triton
WORKDIR /opt/zero-shot-triton
ENTRYPOINT ["locust", "-f", "/opt/zero-shot-triton/loadtest/locustfile.py"]
