# Prometheus from Debian's own package, for the `monitoring` profile: an image that builds where no image
# registry is reachable (make compose-smoke builds it from the local Debian base).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS base
ARG OS_PACKAGES="prometheus"
COPY deploy/docker/os-packages.sh /usr/local/lib/zero-shot-triton/
RUN sh /usr/local/lib/zero-shot-triton/os-packages.sh

# the package's own user and data directory; the scrape config is mounted (deploy/prometheus/prometheus.yml)
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/var/lib/prometheus/metrics2", \
     "--web.listen-address=:9090"]
