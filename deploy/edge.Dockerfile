# haproxy from Debian's own package with deploy/edge/haproxy.cfg, for the `edge` profile: overload shed in C
# in front of the triton service (docs/limits-failures-security.md#an-edge-proxy-for-bursts). Builds where
# no image registry is reachable (make compose-smoke builds it from the local Debian base).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS base
ARG OS_PACKAGES="haproxy"
COPY deploy/docker/os-packages.sh /usr/local/lib/zero-shot-triton/
RUN sh /usr/local/lib/zero-shot-triton/os-packages.sh

COPY deploy/edge/ /etc/zero-shot-triton/edge/
USER haproxy
EXPOSE 8000 8001
ENTRYPOINT ["/usr/sbin/haproxy", "-db", "-f", "/etc/zero-shot-triton/edge/haproxy.cfg"]
