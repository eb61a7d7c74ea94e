#!/usr/bin/env bash
# Install a lock file (locks/*.lock, made by scripts/lock.sh) into a virtual environment exactly: every package
# at its locked version, every file checked against the lock's sha256 (pip --require-hashes), nothing resolved
# at install time (--no-deps: the lock is the whole set). First the installer and build tools the lock pins
# (the names in requirements-build.txt: pip itself, setuptools, wheel, pybind11), then the whole lock, with the
# sdists in it (nncodec) built by those locked tools (no build isolation). Then `pip check` of the lock's
# packages: clean but for the lines locks/pip-check-allowed.txt lists, each with its reason.
# Usage: scripts/install_lock.sh PYTHON LOCK [PROJECT_DIR]
#   PYTHON: the environment's interpreter; PROJECT_DIR: installed last, editable, without its dependencies.
#   pip check's lines about the project's own requirements are left to tests/test_lock.py: in .venv the lock
#   has them all (the test runs pip check there whole), in .venv-oip splitinfer goes without them on purpose.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -eq 2 ] || [ $# -eq 3 ] || { echo "usage: scripts/install_lock.sh PYTHON LOCK [PROJECT_DIR]" >&2; exit 2; }
PY=$1 LOCK=$2 PROJECT=${3:-}
[ -f "$LOCK" ] || { echo "install_lock.sh: no lock file $LOCK (scripts/lock.sh makes them)" >&2; exit 2; }
pip() { "$PY" -m pip "$@" 2> >(grep -v -e "is ignored: it is neither a file nor a directory" >&2); }
# One package's entry of the lock: its name==version line and the hash lines it continues into.
entry() {
  awk -v n="$1" '$0 ~ "^" n "==" { p = 1 } p { print; if ($0 !~ /\\$/) exit }' "$LOCK" | grep . \
    || { echo "install_lock.sh: $LOCK pins no $1 (requirements-build.txt): run scripts/lock.sh" >&2; return 1; }
}
tools=$(sed -E 's/#.*//; s/[][<>=!~ ;].*//' "$ROOT/requirements-build.txt" | grep .)
build_lock=$(mktemp)
trap 'rm -f "$build_lock"' EXIT
for t in $tools; do entry "$t"; done > "$build_lock"
pip install -q --require-hashes --no-deps -r "$build_lock"
pip install -q --require-hashes --no-deps --no-build-isolation -r "$LOCK"
# (setuptools' "Editable installation ... folders with the same name as your package" notice: none here)
[ -z "$PROJECT" ] \
  || PYTHONWARNINGS="ignore:Editable installation" pip install -q --no-deps --no-build-isolation -e "$PROJECT"

project=$(sed -n -E 's/^name = "(.*)"$/\1/p' "$ROOT/pyproject.toml" | head -1)
check=$("$PY" -m pip check 2>&1) || true
broken=$(printf '%s\n' "$check" | grep -v -x -F -e "No broken requirements found." \
           -f <(grep -v -e '^#' -e '^$' "$ROOT/locks/pip-check-allowed.txt") | grep -v "^$project " || true)
if [ -n "$broken" ]; then
  printf '%s\n' "$broken" >&2
  echo "install_lock.sh: pip check found the above in $PY's environment (after installing $LOCK)" >&2
  exit 1
fi
