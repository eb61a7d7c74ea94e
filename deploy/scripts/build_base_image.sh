#!/usr/bin/env bash
# Build the local base image `splitinfer/base:bookworm` without Docker Hub:
# debootstrap a minimal Debian bookworm root with python3 (+venv), then `docker import` it.
# Why: these machines reach Debian's archive but no container registry, and a root built
# from the archive is reproducible. Needs root, debootstrap and a running Docker engine.
# Usage: build_base_image.sh [--force] [--mirror URL]
set -euo pipefail
IMAGE=${SPLITINFER_BASE_IMAGE:-splitinfer/base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --mirror) MIRROR=$2; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "build_base_image.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
command -v debootstrap >/dev/null || { echo "build_base_image.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 2; }
timeout 20 docker info >/dev/null 2>&1 || { echo "build_base_image.sh: no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-default}); start one with deploy/scripts/start_dockerd.sh" >&2; exit 2; }
if [ "$FORCE" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE already exists (use --force to rebuild)"
  exit 0
fi
ROOT=$(mktemp -d /var/tmp/splitinfer-rootfs.XXXXXX)
cleanup() {  # debootstrap mounts proc/sys inside the root: unmount before removing
  awk -v r="$ROOT" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$ROOT" "$ROOT.log"
}
trap cleanup EXIT
echo "debootstrap bookworm (minbase + python3) into $ROOT ..."
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
# Slim the root: no apt lists, caches, docs or man pages (apt inside builds runs `apt-get update` again).
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
       "$ROOT"/usr/share/doc/* "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/* "$ROOT"/tmp/*
cat > "$ROOT/etc/apt/apt.conf.d/90splitinfer" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
echo "nameserver 127.0.0.1" > "$ROOT/etc/resolv.conf"   # Docker replaces it at run time
tar --numeric-owner -C "$ROOT" -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
echo "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
