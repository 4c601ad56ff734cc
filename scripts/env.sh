# Shared settings for Moat's scripts; source it. A target directory outside the clone lets a rerun on
# the same machine (including CI's fresh clone) reuse earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moat-target}"
export MOAT_CACHE="${MOAT_CACHE:-$HOME/.cache/moat}"
MOAT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MOAT_ROOT
export MOAT_SITE_ROOT="${MOAT_SITE_ROOT:-$MOAT_ROOT/target/site}"
mkdir -p "$CARGO_TARGET_DIR" "$MOAT_CACHE"
