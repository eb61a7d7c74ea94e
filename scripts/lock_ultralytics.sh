#!/usr/bin/env bash
# Re-lock .venv-ultra (the Ultralytics test environment, scripts/setup_ultralytics.sh): install the named
# Ultralytics release into a throwaway environment that sees .venv's packages (torch, scipy, matplotlib...
# come from there through a .pth, as in .venv-ultra, and are locked in locks/requirements.lock), then write
# the packages it installed itself, each pinned with the sha256 of its wheel, to locks/requirements-ultra.lock.
# Why not pip-compile: it would resolve and pin torch again (several GB, and a different build from the one
# .venv runs); the environment's own packages are what differs from .venv.
# Usage: scripts/lock_ultralytics.sh [ultralytics==VERSION]   (default: the version in the current lock)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
LOCK=locks/requirements-ultra.lock
want=${1:-$(grep -o '^ultralytics==[^ ]*' "$LOCK" 2>/dev/null || echo "ultralytics")}
[ -x .venv/bin/python ] || { echo "lock_ultralytics.sh: .venv is missing (run scripts/setup.sh first)" >&2; exit 2; }
work=$(mktemp -d -t splitinfer-ultra-lock-XXXX)
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
own=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$site" > "$own/zz_splitinfer_venv.pth"
quiet() { "$@" 2> >(grep -v -e "is ignored: it is neither" -e "dependency resolver does not currently" \
                          -e "requires numpy<2" -e "which is incompatible" >&2); }
quiet "$work/venv/bin/python" -m pip install -q "$want"
"$work/venv/bin/python" -m pip freeze --path "$own" | grep -v '^#' | sort -f > "$work/pins.txt"
quiet "$work/venv/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$work/wheels" -r "$work/pins.txt"
{
  echo "# .venv-ultra's own packages (Ultralytics and what it adds to .venv's), pinned with their wheels' sha256."
  echo "# Written by scripts/lock_ultralytics.sh; installed by scripts/setup_ultralytics.sh with --require-hashes"
  echo "# --no-deps. Linux x86_64, CPython 3.11. Everything else .venv-ultra imports comes from .venv."
  while read -r pin; do
    name=${pin%%==*}
    norm=$(echo "$name" | tr 'A-Z-' 'a-z_')
    wheel=$(ls "$work/wheels" | awk -v n="$norm" 'tolower($0) ~ "^"n"-" {print; exit}')
    [ -n "$wheel" ] || { echo "lock_ultralytics.sh: no wheel downloaded for $pin" >&2; exit 1; }
    echo "$pin \\"
    echo "    --hash=sha256:$(sha256sum "$work/wheels/$wheel" | cut -d' ' -f1)"
  done < "$work/pins.txt"
} > "$LOCK"
echo "lock_ultralytics.sh: $(grep -c '^[A-Za-z]' "$LOCK") packages in $LOCK"
