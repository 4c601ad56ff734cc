#!/usr/bin/env bash
# Builds Moat: the hydration wasm (release, size-optimised) into target/site/pkg, then the server.
# Usage: scripts/build.sh [--release]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$MOAT_ROOT"
profile=dev; [ "${1:-}" = "--release" ] && profile=release

cargo build -p moat-frontend --lib --target wasm32-unknown-unknown --profile wasm-release
mkdir -p "$MOAT_SITE_ROOT/pkg"
# The server sends the .gz copies to browsers that accept gzip; never leave a stale one behind.
rm -f "$MOAT_SITE_ROOT"/pkg/*.gz
# Without the name section the module is 1.2 MB instead of 2.5 MB (0.37 MB gzipped); panics still
# print their message in the console, only wasm stack frames lose their function names.
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-dir "$MOAT_SITE_ROOT/pkg" --out-name moat \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/moat_frontend.wasm"
gzip -9 -k -f "$MOAT_SITE_ROOT/pkg/moat_bg.wasm" "$MOAT_SITE_ROOT/pkg/moat.js"

cargo build -p moat-server --profile "$profile"
