#!/bin/sh
# Builds the release binary: static (no cgo, pure-Go DNS resolver),
# reproducible paths, no debug info. The Dockerfile and CI both run this,
# so the container build is exercised without a Docker engine.
# Usage: deploy/build.sh OUTPUT
set -eu
out=${1:?usage: deploy/build.sh OUTPUT}
cd "$(dirname "$0")/.."
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out" ./cmd/h2proxy
