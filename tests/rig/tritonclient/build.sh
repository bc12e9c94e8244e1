#!/usr/bin/env bash
# Build Triton's Python gRPC client the gRPC tests and benchmark drive Driftline with:
# a Python 3.11 venv of its own (tritonclient[grpc] needs protobuf<7; Driftline's
# environment pins protobuf 7), from PyPI, installed from the lock requirements.txt
# here (tritonclient[grpc], see requirements.in).
#
# The venv lives in ${DRIFTLINE_RIG_CACHE:-~/.cache/driftline-rig}/<key>/venv, where
# the key names the pinned tritonclient version and a hash of requirements.txt and
# this script: a change of either builds a new venv, an unchanged one is never rebuilt.
#
#   bash tests/rig/tritonclient/build.sh           build when missing
#   bash tests/rig/tritonclient/build.sh --print   print the venv's directory and exit
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache_root="${DRIFTLINE_RIG_CACHE:-$HOME/.cache/driftline-rig}"
version="$(sed -n 's/^tritonclient==\([^ ]*\).*/\1/p' "$here/requirements.txt")"
digest="$(cd "$here" && cat requirements.txt build.sh | sha256sum | cut -c1-10)"
key="tritonclient-${version}-${digest}"
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
if [[ -f "$dir/tritonclient.done" ]]; then
  stamp "tritonclient $version: cached"
  exit 0
fi
python="${DRIFTLINE_TRITONCLIENT_PYTHON:-python3.11}"
command -v "$python" >/dev/null || { echo "tritonclient/build.sh: $python is needed" >&2; exit 1; }
rm -rf "$dir" && mkdir -p "$dir"
"$python" -m venv "$dir/venv"
if command -v uv >/dev/null; then
  nice -n "${DRIFTLINE_RIG_NICE:-10}" uv pip install -q --python "$dir/venv/bin/python" \
    --no-deps -r "$here/requirements.txt"
else
  nice -n "${DRIFTLINE_RIG_NICE:-10}" "$dir/venv/bin/python" -m pip install -q \
    --no-deps -r "$here/requirements.txt"
fi
"$dir/venv/bin/python" -c 'import tritonclient.grpc'
echo "tritonclient $version" >"$dir/tritonclient.done"

# Keep the two newest client venvs (other branches may pin another version).
old="$(cd "$cache_root" && ls -dt tritonclient-*/ 2>/dev/null | tail -n +3 || true)"
for d in $old; do
  [[ "$cache_root/$d" -ef "$dir" ]] || rm -rf "${cache_root:?}/$d" "$cache_root/.${d%/}.lock"
done
stamp "tritonclient $version: built"
