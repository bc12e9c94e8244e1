#!/usr/bin/env bash
# Build the real Feast the Feast tests write and read with: a venv of its own (Feast
# needs numpy>=2; Driftline's environment pins numpy 1.26), from the lock
# requirements.txt here (feast[redis], see requirements.in). See ../side-venv.sh.
#
#   bash tests/rig/feast/build.sh           build when missing
#   bash tests/rig/feast/build.sh --print   print the venv's directory and exit
exec bash "$(dirname "$0")/../side-venv.sh" feast \
  'import feast, feast.infra.online_stores.redis' "$@"
