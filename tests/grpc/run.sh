#!/usr/bin/env bash
# Third-party gRPC client test: a Python client generated from
# proto/capsule/brain/v1/brain.proto with grpcio-tools talks to `capsule up`.
#
# Usage: tests/grpc/run.sh [CAPSULE_BINARY]
#   binary: $1, else $CAPSULE, else target/debug/capsule
#   venv:   ${CAPSULE_PY_VENV:-target/grpc-venv} (created once)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

venv="${CAPSULE_PY_VENV:-target/grpc-venv}"
binary="${1:-${CAPSULE:-target/debug/capsule}}"

if [ ! -x "$venv/bin/python" ]; then
  echo "creating venv $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import grpc_tools, grpc_health, grpc_reflection' 2>/dev/null; then
  echo "installing grpcio grpcio-tools grpcio-health-checking grpcio-reflection into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    grpcio grpcio-tools grpcio-health-checking grpcio-reflection
fi

# `capsule up` embeds with MiniLM: use the models directory the cargo tests
# share (fetched there if missing, verified either way).
models="${CAPSULE_MODELS:-${CAPSULE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/capsule}/models}"
"$binary" models fetch --models-dir "$models"
export CAPSULE_MEMORY__MODELS="$models"

exec "$venv/bin/python" tests/grpc/client_test.py "$binary"
