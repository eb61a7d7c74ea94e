#!/usr/bin/env bash
# Start a private Docker engine for splitinfer (when none is running), and print the DOCKER_HOST to use.
# Why: CI and fresh machines have Debian's docker.io installed but no engine started (no systemd).
# The engine gets its own socket, data root, exec root and pid file, and no default bridge,
# so it disturbs no other engine; compose still makes its own bridge network with service-name DNS.
# Usage: eval "$(deploy/scripts/start_dockerd.sh)"   # exports DOCKER_HOST
#        deploy/scripts/start_dockerd.sh --stop
set -euo pipefail
RUN=${SPLITINFER_DOCKER_RUN:-/run/splitinfer-docker}
DATA=${SPLITINFER_DOCKER_DATA:-/var/lib/splitinfer-docker}
SOCK="$RUN/docker.sock"
PIDFILE="$RUN/dockerd.pid"
LOG=${SPLITINFER_DOCKER_LOG:-/var/log/splitinfer-dockerd.log}
if [ "${1:-}" = "--stop" ]; then
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill "$(cat "$PIDFILE")"
    for _ in $(seq 1 100); do kill -0 "$(cat "$PIDFILE" 2>/dev/null)" 2>/dev/null || break; sleep 0.2; done
  fi
  exit 0
fi
mkdir -p "$RUN" "$DATA"
if ! DOCKER_HOST="unix://$SOCK" timeout 10 docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null || { echo "start_dockerd.sh: dockerd is not installed (apt-get install docker.io)" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "start_dockerd.sh: must run as root to start dockerd" >&2; exit 2; }
  # cgroup v2 without systemd: dockerd needs the cgroupfs driver. Time-shared scheduling (chrt --other):
  # started from a real-time process (SCHED_FIFO was seen), the engine and every build and container would
  # inherit it, and two spinning threads then starve everything else of that priority on a 2-core machine.
  OTHER=(); command -v chrt >/dev/null && OTHER=(chrt --other 0)
  nohup "${OTHER[@]}" dockerd --storage-driver=overlay2 --host="unix://$SOCK" --data-root="$DATA" \
    --exec-root="$RUN/exec" --pidfile="$PIDFILE" --bridge=none --iptables=false --ip-forward=false \
    --default-address-pool base=172.30.240.0/20,size=24 \
    --exec-opt native.cgroupdriver=cgroupfs >"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 150); do
    DOCKER_HOST="unix://$SOCK" timeout 10 docker info >/dev/null 2>&1 && break
    if ! kill -0 $! 2>/dev/null; then
      echo "start_dockerd.sh: dockerd exited: $(tail -3 "$LOG" | tr '\n' ' ')" >&2; exit 1
    fi
    sleep 0.2
  done
  DOCKER_HOST="unix://$SOCK" timeout 10 docker info >/dev/null 2>&1 || { echo "start_dockerd.sh: dockerd did not answer within 30 s (log: $LOG)" >&2; exit 1; }
fi
echo "export DOCKER_HOST=unix://$SOCK"
