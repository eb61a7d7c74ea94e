#!/usr/bin/env bash
# Apply a network profile (rate, delay, jitter, loss) to the egress of one interface with tc.
# Uses netem where the kernel has it; otherwise falls back to tbf, which applies the rate only,
# and says so (delay, jitter and loss are then NOT applied). Why: netem is missing on many
# kernels (also on the machines this project is tested on), tbf is everywhere.
# Usage: apply_profile.sh PROFILE DEV [--link uplink|downlink] [--netns NS] [--dry-run]
#        apply_profile.sh --clear DEV [--netns NS]
#        apply_profile.sh --list
# PROFILE: a name from deploy/tc/profiles/ (without .env) or a path to a KEY=VALUE file with
# UL_RATE, DL_RATE, DELAY, JITTER, LOSS. Apply `uplink` on the UE side's interface and
# `downlink` on the network side's. Inside a container, the container needs NET_ADMIN.
set -euo pipefail
PROFILES=$(cd "$(dirname "$0")" && pwd)/profiles
die() { echo "apply_profile.sh: $*" >&2; exit 2; }
LINK=uplink NS="" DRY=0 CLEAR=0 POS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --link) LINK=${2:-}; shift ;;
    --netns) NS=${2:-}; shift ;;
    --dry-run) DRY=1 ;;
    --clear) CLEAR=1 ;;
    --list) for f in "$PROFILES"/*.env; do printf '%-20s %s\n' "$(basename "$f" .env)" "$(head -1 "$f" | sed 's/^# *//')"; done; exit 0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) POS+=("$1") ;;
  esac
  shift
done
TC=(tc); [ -n "$NS" ] && TC=(tc -n "$NS")
run() { if [ "$DRY" = 1 ]; then echo "${TC[*]} $*"; else "${TC[@]}" "$@"; fi; }
if [ "$CLEAR" = 1 ]; then
  [ ${#POS[@]} = 1 ] || die "--clear needs exactly one interface"
  "${TC[@]}" qdisc del dev "${POS[0]}" root 2>/dev/null || true
  echo "cleared shaping on ${POS[0]}"; exit 0
fi
[ ${#POS[@]} = 2 ] || die "expected PROFILE DEV (see --help)"
PROFILE=${POS[0]} DEV=${POS[1]}
FILE=$PROFILE; [ -f "$FILE" ] || FILE="$PROFILES/$PROFILE.env"
[ -f "$FILE" ] || die "$PROFILE: no such profile (try --list)"
UL_RATE="" DL_RATE="" DELAY=0ms JITTER=0ms LOSS=0%
# Read KEY=VALUE lines without executing the file.
while IFS='=' read -r key value; do
  key=$(echo "$key" | tr -d '[:space:]'); value=$(echo "${value%%#*}" | tr -d '[:space:]"')
  case "$key" in
    ''|\#*) ;;
    UL_RATE|DL_RATE|DELAY|JITTER|LOSS) printf -v "$key" '%s' "$value" ;;
    *) die "$FILE: unknown key $key (expected UL_RATE, DL_RATE, DELAY, JITTER, LOSS)" ;;
  esac
done < "$FILE"
case "$LINK" in uplink) RATE=$UL_RATE ;; downlink) RATE=$DL_RATE ;; *) die "--link must be uplink or downlink" ;; esac
[[ "$RATE" =~ ^[0-9.]+[kmg]?bit$ ]] || die "$FILE: bad ${LINK} rate '$RATE' (expected e.g. 50mbit)"
for v in "$DELAY" "$JITTER"; do [[ "$v" =~ ^[0-9.]+(us|ms|s)$ ]] || die "$FILE: bad time '$v' (expected e.g. 20ms)"; done
[[ "$LOSS" =~ ^[0-9.]+%$ ]] || die "$FILE: bad loss '$LOSS' (expected e.g. 0.5%)"
"${TC[@]}" qdisc show dev "$DEV" >/dev/null 2>&1 || die "no interface $DEV${NS:+ in netns $NS}"

# tbf burst: 10 ms of data, at least 64 KiB; queue limit: enough that shaping itself never drops.
bits=$(echo "$RATE" | awk '{v=$0; sub(/bit$/,"",v); m=1; if (v ~ /k$/) m=1e3; if (v ~ /m$/) m=1e6; if (v ~ /g$/) m=1e9; sub(/[kmg]$/,"",v); printf "%.0f", v*m}')
BURST=$(awk -v b="$bits" 'BEGIN{x=b/8*0.010; if (x<65536) x=65536; printf "%d", x}')
LIMIT=$(awk -v b="$bits" -v u="$BURST" 'BEGIN{x=b/8; if (x<16777216) x=16777216; printf "%d", x+u}')

netem_ok() {
  # Ask the kernel (module loaded or loadable, or built in), not a guess.
  modprobe -q sch_netem 2>/dev/null || true
  [ -d /sys/module/sch_netem ] && return 0
  zgrep -qE '^CONFIG_NET_SCH_NETEM=(y|m)' /proc/config.gz 2>/dev/null && return 0
  return 1
}
if netem_ok; then
  args=(delay "$DELAY"); [ "$JITTER" != 0ms ] && args+=("$JITTER" distribution normal)
  [ "$LOSS" != 0% ] && args+=(loss "$LOSS")
  run qdisc replace dev "$DEV" root netem "${args[@]}" rate "$RATE" limit 100000
  echo "applied $(basename "$FILE" .env) ($LINK) on $DEV with netem: rate $RATE, delay $DELAY, jitter $JITTER, loss $LOSS"
else
  run qdisc replace dev "$DEV" root tbf rate "$RATE" burst "$BURST" limit "$LIMIT"
  echo "applied $(basename "$FILE" .env) ($LINK) on $DEV with tbf: rate $RATE only." \
       "netem is not available in this kernel: delay $DELAY, jitter $JITTER and loss $LOSS are NOT applied" \
       "(the UE process's --shape-delay adds a delay in-process)." >&2
fi
