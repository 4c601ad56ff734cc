#!/usr/bin/env bash
# Database-to-file export benchmark (issue 4): `moat export --format trl` to JSONL and to Parquet
# against a straightforward pandas/pyarrow baseline on the same SQLite file.
#
#   bench/export/run.sh            # from the workspace root; see the variables below
#
# Variables (defaults in brackets):
#   MOAT_BIN      the moat binary [$HOME/.cache/moat-target/release/moat]
#   PYTHON        a Python with pandas + pyarrow [/work/.venv-bench-export/bin/python]
#   WORK          where the database and the output files go [/tmp/moat-export-bench]
#   PROMPTS       prompts in the generated study; votes = PROMPTS x 10 [100000]
#   BASELINE_CAP_MB   the straightforward baseline is killed if its RSS passes this (it holds the whole
#                     result, and its JSON text several times over, in memory) [14000]
#   MIN_AVAILABLE_MB  ... or if the machine's MemAvailable drops under this [2000]
#   CHUNKED       also run the baseline with read_sql(chunksize=CHUNKED), "0" to skip [20000]
#   CASES         which cases to run [moat-jsonl moat-parquet baseline-jsonl baseline-parquet
#                 chunked-jsonl chunked-parquet]
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
MOAT_BIN="${MOAT_BIN:-$HOME/.cache/moat-target/release/moat}"
PYTHON="${PYTHON:-/work/.venv-bench-export/bin/python}"
WORK="${WORK:-/tmp/moat-export-bench}"
PROMPTS="${PROMPTS:-100000}"
BASELINE_CAP_MB="${BASELINE_CAP_MB:-14000}"
MIN_AVAILABLE_MB="${MIN_AVAILABLE_MB:-2000}"
CHUNKED="${CHUNKED:-20000}"
CASES="${CASES:-moat-jsonl moat-parquet baseline-jsonl baseline-parquet chunked-jsonl chunked-parquet}"

if [ ! -x /usr/bin/time ]; then
    apt-get install -y time >/dev/null
fi
mkdir -p "$WORK"
DB="$WORK/moat-$PROMPTS.db"
URL="sqlite://$DB"

# 1. The database: created and migrated by moat itself, then filled by generate.py (cached).
if [ -f "$DB" ] && [ "$("$PYTHON" -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT COUNT(*) FROM studies WHERE slug='bench'\").fetchone()[0])" "$DB" 2>/dev/null)" = 1 ]; then
    echo "using cached $DB"
else
    rm -f "$DB" "$DB-wal" "$DB-shm"
    "$MOAT_BIN" --database-url "$URL" export --study none --out /dev/null >/dev/null 2>&1 || true
    "$PYTHON" "$HERE/generate.py" "$DB" --prompts "$PROMPTS"
fi
EXPECTED=$("$PYTHON" -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT COUNT(*) FROM votes WHERE choice IN ('left','right')\").fetchone()[0])" "$DB")
VOTES=$("$PYTHON" -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM votes').fetchone()[0])" "$DB")
# Warm the page cache so every case reads the file from memory.
cat "$DB" >/dev/null

echo "votes $VOTES, decided (left/right) $EXPECTED; db $(du -m "$DB" | cut -f1) MB; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "moat: $MOAT_BIN ($(stat -c %y "$MOAT_BIN" | cut -d. -f1))"
"$PYTHON" -c "import sys, pandas, pyarrow; print(f'python {sys.version.split()[0]}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}')"

# 2. The cases, each in its own process under /usr/bin/time -v. A watchdog kills a case whose RSS
#    passes its cap (only the in-memory baseline gets one) so it cannot take the shared machine down.
declare -A RESULT
run_case() {
    local name="$1" cap_mb="$2" out="$3"
    shift 3
    rm -f "$out"
    sync
    local load; load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -v -o "$WORK/$name.time" "$@" >"$WORK/$name.log" 2>&1 &
    local tpid=$! killed=""
    while kill -0 "$tpid" 2>/dev/null; do
        if [ "$cap_mb" -gt 0 ]; then
            local child; child=$(pgrep -P "$tpid" | head -1 || true)
            if [ -n "$child" ]; then
                local rss; rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$child/status" 2>/dev/null || echo 0)
                local avail; avail=$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)
                if [ "${rss:-0}" -gt "$cap_mb" ]; then
                    kill "$child" 2>/dev/null || true
                    killed="killed at RSS ${rss} MB > cap ${cap_mb} MB"
                elif [ "$avail" -lt "$MIN_AVAILABLE_MB" ]; then
                    kill "$child" 2>/dev/null || true
                    killed="killed at RSS ${rss} MB: machine down to ${avail} MB available"
                fi
            fi
        fi
        sleep 0.2
    done
    wait "$tpid" || true
    [ -n "$killed" ] && rm -f "$out"  # a partial file must not reach the content check
    local t="$WORK/$name.time"
    local wall; wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$t")
    local cpu; cpu=$(awk -F': ' '/User time|System time/ {s+=$2} END {printf "%.2f", s}' "$t")
    local rss_kb; rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$t")
    local status; status=$(awk -F': ' '/Exit status/ {print $2}' "$t")
    local rows="-"
    if [ -z "$killed" ] && [ "$status" = 0 ] && [ -f "$out" ]; then
        case "$out" in
            *.jsonl) rows=$(wc -l <"$out") ;;
            *.parquet) rows=$("$PYTHON" -c "import pyarrow.parquet as pq,sys; print(pq.ParquetFile(sys.argv[1]).metadata.num_rows)" "$out") ;;
        esac
    fi
    local size="-"
    [ -f "$out" ] && size=$(( $(stat -c %s "$out") / 1000000 ))
    RESULT[$name]="$rows|$wall|$cpu|$rss_kb|$size|$load|${killed:-exit $status}"
    echo "  $name: rows $rows, wall ${wall}s, cpu ${cpu}s, peak RSS $((rss_kb / 1024)) MiB, ${size} MB, load $load, ${killed:-exit $status}"
}

for c in $CASES; do
    case "$c" in
        moat-jsonl) run_case "$c" 0 "$WORK/moat.jsonl" "$MOAT_BIN" --database-url "$URL" export --study bench --format trl --out "$WORK/moat.jsonl" ;;
        moat-parquet) run_case "$c" 0 "$WORK/moat.parquet" "$MOAT_BIN" --database-url "$URL" export --study bench --format trl --parquet --out "$WORK/moat.parquet" ;;
        baseline-jsonl) run_case "$c" "$BASELINE_CAP_MB" "$WORK/baseline.jsonl" "$PYTHON" "$HERE/baseline.py" "$DB" --format jsonl --out "$WORK/baseline.jsonl" ;;
        baseline-parquet) run_case "$c" "$BASELINE_CAP_MB" "$WORK/baseline.parquet" "$PYTHON" "$HERE/baseline.py" "$DB" --format parquet --out "$WORK/baseline.parquet" ;;
        chunked-jsonl) [ "$CHUNKED" != 0 ] && run_case "$c" 0 "$WORK/chunked.jsonl" "$PYTHON" "$HERE/baseline.py" "$DB" --format jsonl --chunksize "$CHUNKED" --out "$WORK/chunked.jsonl" ;;
        chunked-parquet) [ "$CHUNKED" != 0 ] && run_case "$c" 0 "$WORK/chunked.parquet" "$PYTHON" "$HERE/baseline.py" "$DB" --format parquet --chunksize "$CHUNKED" --out "$WORK/chunked.parquet" ;;
        *) echo "unknown case $c" >&2; exit 2 ;;
    esac
done

# 3. Row counts must agree with the database (left/right votes), and the files must hold the same
#    records: Moat's and the baseline's rows are compared field by field (parsed, so JSON escaping
#    differences such as pandas' "\/" do not count).
FAIL=0
for c in "${!RESULT[@]}"; do
    rows="${RESULT[$c]%%|*}"
    if [ "$rows" != "-" ] && [ "$rows" != "$EXPECTED" ]; then
        echo "ROW COUNT MISMATCH: $c wrote $rows rows, expected $EXPECTED" >&2
        FAIL=1
    fi
done
"$PYTHON" - "$WORK" <<'EOF' || FAIL=1
import json, os, sys
import pyarrow.parquet as pq
work = sys.argv[1]
def lines(path, n=20000):
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= n:
                break
            yield json.loads(line)
ref = os.path.join(work, "moat.jsonl")
if os.path.exists(ref):
    for other in ("baseline.jsonl", "chunked.jsonl"):
        p = os.path.join(work, other)
        if os.path.exists(p) and os.path.getsize(p):
            bad = sum(a != b for a, b in zip(lines(ref), lines(p)))
            print(f"  content check: first 20,000 rows of moat.jsonl vs {other}: {bad} differ")
            if bad:
                sys.exit(1)
refp = os.path.join(work, "moat.parquet")
if os.path.exists(refp):
    a = pq.ParquetFile(refp).read_row_group(0)
    for other in ("baseline.parquet", "chunked.parquet"):
        p = os.path.join(work, other)
        if os.path.exists(p) and os.path.getsize(p):
            b = pq.read_table(p, columns=a.column_names).slice(0, a.num_rows)
            same = all(a.column(c).to_pylist() == b.column(c).to_pylist() for c in a.column_names)
            print(f"  content check: first row group ({a.num_rows:,} rows) of moat.parquet vs {other}: {'same' if same else 'DIFFERENT'}")
            if not same:
                sys.exit(1)
EOF

# 4. The table. Ratios are against the straightforward baseline of the same format (and, in
#    brackets, against the chunked one).
ratio() { # numerator rows/s, case name of the denominator
    local d="${RESULT[$2]:-}"
    [ -z "$d" ] && { echo "-"; return; }
    IFS='|' read -r rows wall _ <<<"$d"
    [ "$rows" = "-" ] && { echo "n/a"; return; }
    awk -v n="$1" -v r="$rows" -v w="$wall" 'BEGIN {printf "%.1f×", n / (r / w)}'
}
echo
echo "| case | rows | wall s | CPU s | rows/s | vs baseline (vs chunked) | peak RSS MiB | output MB | load avg at start | end |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for c in $CASES; do
    [ -z "${RESULT[$c]:-}" ] && continue
    IFS='|' read -r rows wall cpu rss_kb size load end <<<"${RESULT[$c]}"
    rps="-"
    [ "$rows" != "-" ] && rps=$(awk -v r="$rows" -v w="$wall" 'BEGIN {printf "%d", r / w}')
    vs=""
    case "$c" in
        moat-jsonl) vs="$(ratio "$rps" baseline-jsonl) ($(ratio "$rps" chunked-jsonl))" ;;
        moat-parquet) vs="$(ratio "$rps" baseline-parquet) ($(ratio "$rps" chunked-parquet))" ;;
    esac
    echo "| $c | $rows | $wall | $cpu | $rps | $vs | $((rss_kb / 1024)) | $size | $load | $end |"
done
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $FAIL
