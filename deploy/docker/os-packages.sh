#!/bin/sh
# The OS packages a base image lacks (build argument OS_PACKAGES, space-separated), from the base's apt
# sources. Empty: nothing to install, nothing fetched (a base made with them already, as `make base-image`).
set -eu
[ -n "${OS_PACKAGES:-}" ] || exit 0
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $OS_PACKAGES
rm -rf /var/lib/apt/lists/*
