#!/usr/bin/env bash
# Benchmark moat-stats against FastChat's Bradley–Terry code on the same synthetic battles.
#
#   stats/bench/run.sh [BATTLES] [MODELS] [ROUNDS]      (defaults 1000000 120 100)
#   END_TO_END=1 stats/bench/run.sh 10000000 120 100    (also the end-to-end run with style control,
#                                                          Moat's then FastChat's, with the ratios)
#   END_TO_END=only BENCH_DIR=DIR stats/bench/run.sh …   (only that; reuses DIR/battles-style-BATTLES.jsonl)
#
#   PARQUET=1 …                                         (also Moat on the same battles as Parquet)
#
# Needs python3 with numpy, scipy, pandas and tqdm (and pyarrow for PARQUET=1) (VENV, default /work/.venv-stats) and FastChat's
# fastchat/serve/monitor/rating_systems.py (FASTCHAT_RATING_SYSTEMS, default
# /work/fastchat/rating_systems.py), with elo_analysis.py from the same folder beside it for the
# end-to-end run. fschat on PyPI (0.2.36) predates that file, so take it from the
# lm-sys/FastChat repository; it is not committed here.
set -euo pipefail
BATTLES=${1:-1000000}
MODELS=${2:-120}
ROUNDS=${3:-100}
VENV=${VENV:-/work/.venv-stats}
RATING_SYSTEMS=${FASTCHAT_RATING_SYSTEMS:-/work/fastchat/rating_systems.py}
WORK=${BENCH_DIR:-$(mktemp -d)}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

cd "$ROOT"
cargo build -p moat-stats --release --example bench_bt
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bench_bt
if [ "${END_TO_END:-0}" != only ]; then
  "$BIN" --battles "$BATTLES" --models "$MODELS" --write "$WORK/battles.jsonl"
  PYTHONPATH="$(dirname "$RATING_SYSTEMS")" "$VENV/bin/python" "$HERE/fastchat_bt.py" \
      "$WORK/battles.jsonl" "$ROUNDS" "$WORK/fastchat.json"
  "$BIN" --rounds "$ROUNDS" --read "$WORK/battles.jsonl" --fastchat "$WORK/fastchat.json"
fi
# END_TO_END=1: also what `moat leaderboard --battles FILE --style-control` does, once, on battles
# that carry Arena's conv_metadata style counts: reading, bootstrap, style control, peak memory;
# then FastChat's leaderboard code on the same file (fastchat_end_to_end.py: read_json, online Elo,
# compute_bt with its bootstrap, compute_style_control with its bootstrap, the tables), and the
# ratios. END_TO_END=only skips the fit-only comparison above. STYLE_ROUNDS sets FastChat's
# style-control bootstrap rounds when its full ROUNDS would not fit the machine (default ROUNDS);
# FASTCHAT_ARGS adds options of fastchat_end_to_end.py (e.g. --compact-read at 10M, --max-gb).
if [ "${END_TO_END:-0}" != 0 ]; then
  [ -f "$WORK/battles-style-$BATTLES.jsonl" ] ||
    "$BIN" --battles "$BATTLES" --models "$MODELS" --style --write "$WORK/battles-style-$BATTLES.jsonl"
  "$BIN" --rounds "$ROUNDS" --end-to-end "$WORK/battles-style-$BATTLES.jsonl" --json "$WORK/moat-end-to-end.json"
  free -g | head -2
  PYTHONPATH="$(dirname "$RATING_SYSTEMS")" "$VENV/bin/python" "$HERE/fastchat_end_to_end.py" \
      "$WORK/battles-style-$BATTLES.jsonl" --rounds "$ROUNDS" --style-rounds "${STYLE_ROUNDS:-$ROUNDS}" \
      --moat "$WORK/moat-end-to-end.json" --out "$WORK/fastchat-end-to-end.json" ${FASTCHAT_ARGS:-}
fi
# PARQUET=1: the same battles as Parquet (pyarrow in VENV converts them once), read by column by
# `moat leaderboard --battles FILE.parquet`'s reader (exports/examples/bench_arena_parquet.rs).
if [ "${PARQUET:-0}" != 0 ]; then
  [ -f "$WORK/battles-style-$BATTLES.parquet" ] ||
    "$VENV/bin/python" "$HERE/to_parquet.py" "$WORK/battles-style-$BATTLES.jsonl" "$WORK/battles-style-$BATTLES.parquet"
  cargo build -p moat-exports --release --example bench_arena_parquet
  "${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bench_arena_parquet" "$WORK/battles-style-$BATTLES.parquet" "$ROUNDS"
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
