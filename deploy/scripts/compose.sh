#!/usr/bin/env bash
# docker-compose for splitinfer with the GPU override added when this host has a usable NVIDIA GPU
# (nvidia-smi answers and the engine knows the nvidia runtime); CPU otherwise.
# Usage: deploy/scripts/compose.sh up -d server prometheus   (any docker-compose arguments)
set -euo pipefail
DEPLOY=$(cd "$(dirname "$0")/.." && pwd)
FILES=(-f "$DEPLOY/docker-compose.yml")
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 \
   && docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
  FILES+=(-f "$DEPLOY/docker-compose.gpu.yml")
  echo "compose.sh: NVIDIA GPU found: the network process runs Part II on CUDA" >&2
else
  echo "compose.sh: no usable NVIDIA GPU: the network process runs on CPU" >&2
fi
exec docker-compose "${FILES[@]}" "$@"
