#!/usr/bin/env bash
# docker-compose for splitinfer with the GPU override added when this host has a usable NVIDIA GPU
# (nvidia-smi answers and the engine knows the nvidia runtime); CPU otherwise.
# Usage: deploy/scripts/compose.sh up -d server prometheus   (any docker-compose arguments)
# Without a reachable Docker engine it says so in one line (exit 2) instead of docker-compose's traceback;
# with DOCKER_HOST unset it uses the private engine of start_dockerd.sh when that one answers.
set -euo pipefail
DEPLOY=$(cd "$(dirname "$0")/.." && pwd)
PRIVATE_SOCK=${SPLITINFER_DOCKER_RUN:-/run/splitinfer-docker}/docker.sock
for tool in docker docker-compose; do
  command -v "$tool" >/dev/null 2>&1 || { echo "compose.sh: $tool is not installed (Debian: apt-get install docker.io docker-compose)" >&2; exit 2; }
done
if [ -z "${DOCKER_HOST:-}" ] && ! timeout 20 docker info >/dev/null 2>&1 && [ -S "$PRIVATE_SOCK" ] \
   && DOCKER_HOST="unix://$PRIVATE_SOCK" timeout 20 docker info >/dev/null 2>&1; then
  export DOCKER_HOST="unix://$PRIVATE_SOCK"
  echo "compose.sh: using the private engine at $DOCKER_HOST" >&2
fi
if ! timeout 20 docker info >/dev/null 2>&1; then
  echo "compose.sh: no Docker engine answers at ${DOCKER_HOST:-unix:///var/run/docker.sock}: start one (eval \"\$(deploy/scripts/start_dockerd.sh)\" as root) or set DOCKER_HOST" >&2
  exit 2
fi
FILES=(-f "$DEPLOY/docker-compose.yml")
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 \
   && timeout 20 docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
  FILES+=(-f "$DEPLOY/docker-compose.gpu.yml")
  echo "compose.sh: NVIDIA GPU found: the network process runs Part II on CUDA" >&2
else
  echo "compose.sh: no usable NVIDIA GPU: the network process runs on CPU" >&2
fi
exec docker-compose "${FILES[@]}" "$@"
