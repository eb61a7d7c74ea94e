#!/usr/bin/env bash
# System packages the deployment tests need (CI runs as root on Debian bookworm):
# docker.io (dockerd, started by hand by the tests), docker-compose 1.29, debootstrap (base image),
# iproute2 (ip netns, tc), prometheus and chromium (tests/system/test_dashboard.py renders the console
# dashboard after a real run). Installs only what is missing; never fails the CI run by itself: a
# missing engine makes the compose test skip with the reason printed.
set -uo pipefail
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v tc >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} = 0 ]; then
  echo "ci_system_deps: docker.io, docker-compose, debootstrap, iproute2, prometheus, chromium present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ci_system_deps: missing ${need[*]} and cannot apt-get here (not root or not Debian)" >&2
  exit 0
fi
echo "ci_system_deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }; then
  echo "ci_system_deps: apt-get install ${need[*]} failed; tests that need them will say so" >&2
fi
exit 0
