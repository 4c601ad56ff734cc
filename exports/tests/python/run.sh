#!/usr/bin/env bash
# Real-client check of every export format, for CI:
#   1. installs pyarrow and datasets (pinned in requirements.txt) into a virtual environment,
#   2. writes every format for a fixed record set with the write_samples example,
#   3. loads each file with pyarrow and Hugging Face datasets and checks it against the manifest.
# Environment: MOAT_EXPORTS_VENV (default: exports/tests/python/.venv), PYTHON (default: python3),
# CARGO_TARGET_DIR as usual.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="${MOAT_EXPORTS_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --requirement "$here/requirements.txt"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
(cd "$root" && cargo run --quiet -p moat-exports --example write_samples -- "$out")
"$venv/bin/python" "$here/check_clients.py" "$out"
