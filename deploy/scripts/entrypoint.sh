#!/bin/sh
# Container entrypoint: optionally shape this container's egress with a network profile, then run the command.
# SPLITINFER_TC_PROFILE=<name from deploy/tc/profiles> (needs cap NET_ADMIN), SPLITINFER_TC_LINK=uplink|downlink,
# SPLITINFER_TC_DEV (default eth0). Without netem only the rate is applied (apply_profile.sh says so).
set -e
if [ -n "${SPLITINFER_TC_PROFILE:-}" ]; then
  bash /opt/splitinfer/tc/apply_profile.sh "$SPLITINFER_TC_PROFILE" "${SPLITINFER_TC_DEV:-eth0}" \
    --link "${SPLITINFER_TC_LINK:-uplink}"
fi
exec "$@"
