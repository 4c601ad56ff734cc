#!/usr/bin/env bash
# Fuzzes the JSON API with schemathesis against a live `moat serve`:
#   1. installs schemathesis (pinned in scripts/fuzz/requirements.txt) into $MOAT_CACHE/venv-fuzz,
#   2. starts the debug `moat` on a temporary SQLite file with a known admin token, the demo study
#      (prompts) and an imported arena study (votes, so the leaderboard has something to fit),
#   3. runs every phase of schemathesis on /api/v1/openapi.json with the bearer token, checking that
#      no answer is a 5xx and that every answer matches the document (schema, status code, content
#      type), bounded by examples per operation and a time budget (under 3 minutes on 2 cores).
# Fails on any failure schemathesis reports. Environment: FUZZ_MAX_EXAMPLES (default 40),
# FUZZ_MAX_TIME (seconds, default 150), FUZZ_SEED (default 1), PYTHON (default python3).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$MOAT_ROOT"

venv="$MOAT_CACHE/venv-fuzz"
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --requirement scripts/fuzz/requirements.txt

cargo build -q -p moat-server
moat="$CARGO_TARGET_DIR/debug/moat"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

token="fuzz-admin-token"
port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
mkdir -p "$work/site"
MOAT_ADMIN_TOKEN="$token" RUST_LOG="${RUST_LOG:-warn}" "$moat" \
  --database-url "sqlite://$work/moat.db" --data-dir "$work/data" \
  serve --addr "127.0.0.1:$port" --site-root "$work/site" --demo >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "$base/api/v1/openapi.json" -o /dev/null 2>/dev/null; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/server.log" >&2; exit 1; fi
  sleep 0.2
done

# An arena study with votes: 60 battles among three models.
"$venv/bin/python" - "$work/battles.jsonl" <<'PY'
import json, random, sys
random.seed(7)
models = ["alpha-7b", "beta-13b", "gamma-70b"]
with open(sys.argv[1], "w") as out:
    for i in range(60):
        a, b = random.sample(models, 2)
        question = f"Question {i}?"
        out.write(json.dumps({
            "question_id": f"q{i}", "model_a": a, "model_b": b, "judge": f"judge{i % 5}",
            "winner": random.choice(["model_a", "model_b", "tie", "tie (bothbad)"]),
            "conversation_a": [{"role": "user", "content": question}, {"role": "assistant", "content": f"{a} says {i}"}],
            "conversation_b": [{"role": "user", "content": question}, {"role": "assistant", "content": f"{b} says {i}"}],
        }) + "\n")
PY
curl -fsS -H "Authorization: Bearer $token" -X POST --data-binary "@$work/battles.jsonl" \
  "$base/api/v1/studies/fuzz-arena/import?format=arena" -o /dev/null

status=0
"$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
  --max-examples "${FUZZ_MAX_EXAMPLES:-40}" --max-time "${FUZZ_MAX_TIME:-150}" \
  --seed "${FUZZ_SEED:-1}" --workers 1 --request-timeout 20 \
  --generation-database none --no-color \
  --report junit --report-dir "$work/report" || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis found failures (above); the server's log:" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"
