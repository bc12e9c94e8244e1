#!/usr/bin/env bash
# Build Triton's Python gRPC client the gRPC tests and benchmark drive Driftline
# with: a venv of its own (tritonclient[grpc] needs protobuf<7; Driftline's
# environment pins protobuf 7), from the lock requirements.txt here (see
# requirements.in). See ../side-venv.sh.
#
#   bash tests/rig/tritonclient/build.sh           build when missing
#   bash tests/rig/tritonclient/build.sh --print   print the venv's directory and exit
exec bash "$(dirname "$0")/../side-venv.sh" tritonclient 'import tritonclient.grpc' "$@"
