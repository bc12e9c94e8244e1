#!/usr/bin/env bash
# Build a Python 3.11 venv of its own for a tool the tests drive from outside
# Driftline's environment (its pins cannot share Driftline's lock), from PyPI,
# installed from the lock requirements.txt in the tool's folder here.
#
# The venv lives in ${DRIFTLINE_RIG_CACHE:-~/.cache/driftline-rig}/<key>/venv, where
# the key names the tool's pinned version and a hash of its requirements.txt, its
# build.sh and this script: a change of any builds a new venv, an unchanged one is
# never rebuilt. uv's download cache (~/.cache/uv) is shared with everything else.
#
#   bash tests/rig/side-venv.sh TOOL 'IMPORT CHECK' [--print]
#
# TOOL is the folder beside this script and the package pinned in its lock; the
# import check is run in the new venv before it counts as built. `--print` prints
# the venv's directory (its parent) and exits. Called by each tool's build.sh.
set -euo pipefail

tool="$1"
check="$2"
rig="$(cd "$(dirname "$0")" && pwd)"
here="$rig/$tool"
cache_root="${DRIFTLINE_RIG_CACHE:-$HOME/.cache/driftline-rig}"
version="$(sed -n "s/^${tool}==\([^ ]*\).*/\1/p" "$here/requirements.txt")"
digest="$(cat "$here/requirements.txt" "$here/build.sh" "$rig/side-venv.sh" | sha256sum | cut -c1-10)"
key="${tool}-${version}-${digest}"
dir="$cache_root/$key"

if [[ "${3:-}" == "--print" ]]; then
  echo "$dir"
  exit 0
fi

started=$(date +%s)
stamp() { printf '%-34s %4ss\n' "$1" "$(($(date +%s) - started))"; }

mkdir -p "$cache_root"
if command -v flock >/dev/null; then
  exec 9>"$cache_root/.$key.lock"
  flock 9
fi
if [[ -f "$dir/$tool.done" ]]; then
  stamp "$tool $version: cached"
  exit 0
fi
python="${DRIFTLINE_SIDE_VENV_PYTHON:-python3.11}"
command -v "$python" >/dev/null || { echo "side-venv.sh: $python is needed" >&2; exit 1; }
rm -rf "$dir" && mkdir -p "$dir"
"$python" -m venv "$dir/venv"
if command -v uv >/dev/null; then
  nice -n "${DRIFTLINE_RIG_NICE:-10}" uv pip install -q --python "$dir/venv/bin/python" \
    --no-deps -r "$here/requirements.txt"
else
  nice -n "${DRIFTLINE_RIG_NICE:-10}" "$dir/venv/bin/python" -m pip install -q \
    --no-deps -r "$here/requirements.txt"
fi
"$dir/venv/bin/python" -c "$check"
echo "$tool $version" >"$dir/$tool.done"

# Keep the two newest venvs of the tool (other branches may pin another version).
old="$(cd "$cache_root" && ls -dt "$tool"-*/ 2>/dev/null | tail -n +3 || true)"
for d in $old; do
  [[ "$cache_root/$d" -ef "$dir" ]] || rm -rf "${cache_root:?}/$d" "$cache_root/.${d%/}.lock"
done
stamp "$tool $version: built"
