#!/usr/bin/env bash
# Installs what building and testing Moat needs, idempotently: the wasm32 target, wasm-bindgen-cli at
# the version Cargo.lock pins, and (with --browser) Debian's Chromium and the npm packages of end2end/.
# `--browser-only` installs just the browser part (the test script runs it while the code builds).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$MOAT_ROOT"

build_tools() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
  fi
  local want have
  want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
  have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
  if [ "$have" != "$want" ]; then
    # --locked fails for this version (a locked dependency is missing from the registry); see BUILD-NOTES.
    cargo install wasm-bindgen-cli --version "$want"
  fi
}

browser() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
  if [ ! -d end2end/node_modules/playwright-core ]; then
    (cd end2end && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

case "${1:-}" in
  "") build_tools ;;
  --browser) build_tools; browser ;;
  --browser-only) browser ;;
  *) echo "usage: scripts/setup.sh [--browser | --browser-only]" >&2; exit 2 ;;
esac
