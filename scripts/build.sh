#!/usr/bin/env bash
# Builds Moat: the hydration wasm (release, size-optimised) into target/site/pkg, then the server.
# Usage: scripts/build.sh [--release]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$MOAT_ROOT"
profile=dev; [ "${1:-}" = "--release" ] && profile=release

cargo build -p moat-frontend --lib --target wasm32-unknown-unknown --profile wasm-release
mkdir -p "$MOAT_SITE_ROOT/pkg"
# wasm-bindgen writes into a staging folder; only files whose bytes changed are copied into the site,
# so an unchanged module keeps its timestamps and the server (which embeds the site, server/build.rs)
# is not rebuilt for nothing. `gzip -n` leaves the name and time out of the copy: same input, same bytes.
staging="$CARGO_TARGET_DIR/site-staging/pkg"
rm -rf "$staging" && mkdir -p "$staging"
# Without the name section the module is 1.2 MB instead of 2.5 MB (0.37 MB gzipped); panics still
# print their message in the console, only wasm stack frames lose their function names.
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-dir "$staging" --out-name moat \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/moat_frontend.wasm"
# The server sends the .gz copies to browsers that accept gzip.
gzip -9 -n -k -f "$staging/moat_bg.wasm" "$staging/moat.js"
# Originals first, then their .gz copies (a copy older than its file counts as stale).
for file in moat_bg.wasm moat.js moat_bg.wasm.gz moat.js.gz; do
  cmp -s "$staging/$file" "$MOAT_SITE_ROOT/pkg/$file" || cp "$staging/$file" "$MOAT_SITE_ROOT/pkg/$file"
done

cargo build -p moat-server --profile "$profile"
