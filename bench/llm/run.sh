#!/usr/bin/env bash
# Moat's local engine (candle) against llama.cpp on the same GGUF, prompt, thread count and sampling
# (greedy), in one run, so that both see the same machine load. Prints both and the ratios.
#
#   bench/llm/run.sh [--threads 2] [--runs 5] [--tokens 128] [--weights as-stored|q8_0]
#
# `--weights as-stored` is Moat's default (the engine multiplies the file's own Q4_1 blocks, see
# moat_llm::local::WeightFormat); `--weights q8_0` converts Q4_1/Q5_x matrices to Q8_0 at load.
# llama.cpp comes from llama-cpp-python, built from source into a virtual environment under
# $MOAT_CACHE/venv-llama the first time (about 5 minutes on two cores). Not part of CI.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../../scripts/env.sh
source "$root/scripts/env.sh"

threads=2
runs=5
tokens=128
weights=as-stored
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --tokens) tokens="$2"; shift 2 ;;
        --weights) weights="$2"; shift 2 ;;
        *) echo "usage: $0 [--threads N] [--runs N] [--tokens N] [--weights as-stored|q8_0]" >&2; exit 2 ;;
    esac
done

gguf="$("$root/scripts/fetch-smollm2.sh")"
venv="$MOAT_CACHE/venv-llama"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
    echo "building llama-cpp-python 0.3.36 into $venv (a few minutes)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    # A CPU build for this machine's instruction set, as llama.cpp's own default.
    CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install --quiet "llama-cpp-python==0.3.36" >&2
fi

cd "$root"
cargo bench -q -p moat-llm --bench local --no-run >&2
bench() { cargo bench -q -p moat-llm --bench local -- --gguf "$gguf" "$@"; }
prompt="$(mktemp)"
trap 'rm -f "$prompt"' EXIT
bench --print-prompt > "$prompt"

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
moat="$(bench --threads "$threads" --runs "$runs" --tokens "$tokens" --weights "$weights")"
llama="$("$venv/bin/python" "$root/bench/llm/llama_cpp_bench.py" --gguf "$gguf" --prompt-file "$prompt" \
    --threads "$threads" --runs "$runs" --tokens "$tokens")"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$moat"
echo "$llama"
rate() { grep "^$1" | sed -E 's/^[^:]*: ([0-9.]+) tokens.*/\1/'; }
moat_pp="$(rate prompt <<<"$moat")"; moat_gen="$(rate generation <<<"$moat")"
llama_pp="$(rate prompt <<<"$llama")"; llama_gen="$(rate generation <<<"$llama")"
awk -v a="$moat_pp" -v b="$llama_pp" -v c="$moat_gen" -v d="$llama_gen" 'BEGIN {
    printf "moat / llama.cpp: prompt processing %.2f, generation %.2f\n", a / b, c / d
}'
