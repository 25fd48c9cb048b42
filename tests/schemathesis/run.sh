#!/usr/bin/env bash
# Schemathesis (a third-party OpenAPI fuzzer, from PyPI) against `capsule up`:
# every operation of the served /openapi.json, with an operator token, checked
# for no 5xx and for responses (status, content type, body) that match the
# document. Exits non-zero on any failure.
#
# Usage: tests/schemathesis/run.sh [CAPSULE_BINARY]
#   binary:   $1, else $CAPSULE, else target/debug/capsule
#   venv:     ${CAPSULE_SCHEMATHESIS_VENV:-target/schemathesis-venv} (created once)
#   examples: ${CAPSULE_SCHEMATHESIS_EXAMPLES:-100} per operation and phase
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# Pinned: a new release may add checks or change generation.
version=4.32.5
venv="${CAPSULE_SCHEMATHESIS_VENV:-target/schemathesis-venv}"
binary="${1:-${CAPSULE:-target/debug/capsule}}"

if [ ! -x "$venv/bin/python" ]; then
  echo "creating venv $venv"
  python3 -m venv "$venv"
fi
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null || true)" != "schemathesis, version $version" ]; then
  echo "installing schemathesis==$version into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi

exec "$venv/bin/python" tests/schemathesis/fuzz_api.py "$binary" "$venv/bin/schemathesis"
