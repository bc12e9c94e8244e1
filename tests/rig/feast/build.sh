#!/usr/bin/env bash
# Build the real Feast the Feast online-store tests write with: a Python 3.11 venv
# of its own (Feast needs numpy>=2; Driftline's environment pins numpy 1.26), from
# PyPI, installed from the lock requirements.txt here (feast[redis], see
# requirements.in).
#
# The venv lives in ${DRIFTLINE_RIG_CACHE:-~/.cache/driftline-rig}/<key>/venv, where
# the key names the pinned Feast version and a hash of requirements.txt and this
# script: a change of either builds a new venv, an unchanged one is never rebuilt.
# uv's download cache (~/.cache/uv) is shared with everything else.
#
#   bash tests/rig/feast/build.sh           build when missing
#   bash tests/rig/feast/build.sh --print   print the venv's directory and exit
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${DRIFTLINE_RIG_CACHE:-$HOME/.cache/driftline-rig}"
# Keep in step with feast_key() in tests/support/driftline_testing/feast.py.
version="$(sed -n 's/^feast==\([^ ]*\).*/\1/p' "$here/requirements.txt")"
digest="$(cd "$here" && cat requirements.txt build.sh | sha256sum | cut -c1-10)"
key="feast-${version}-${digest}"
dir="$cache_root/$key"

if [[ "${1:-}" == "--print" ]]; then
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
if [[ -f "$dir/feast.done" ]]; then
  stamp "feast $version: cached"
  exit 0
fi
python="${DRIFTLINE_FEAST_PYTHON:-python3.11}"
command -v "$python" >/dev/null || { echo "feast/build.sh: $python is needed" >&2; exit 1; }
rm -rf "$dir" && mkdir -p "$dir"
"$python" -m venv "$dir/venv"
if command -v uv >/dev/null; then
  nice -n "${DRIFTLINE_RIG_NICE:-10}" uv pip install -q --python "$dir/venv/bin/python" \
    --no-deps -r "$here/requirements.txt"
else
  nice -n "${DRIFTLINE_RIG_NICE:-10}" "$dir/venv/bin/python" -m pip install -q \
    --no-deps -r "$here/requirements.txt"
fi
"$dir/venv/bin/python" -c 'import feast, feast.infra.online_stores.redis'
echo "feast $version" >"$dir/feast.done"

# Keep the two newest Feast venvs (other branches may pin another version).
old="$(cd "$cache_root" && ls -dt feast-*/ 2>/dev/null | tail -n +3 || true)"
for d in $old; do
  [[ "$cache_root/$d" -ef "$dir" ]] || rm -rf "${cache_root:?}/$d" "$cache_root/.${d%/}.lock"
done
stamp "feast $version: built"
