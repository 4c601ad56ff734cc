#!/usr/bin/env bash
# Reward-model training side by side, in one run: Hugging Face TRL's RewardTrainer (PyTorch, full
# fine-tuning of all-MiniLM-L6-v2 with a one-output head) and Moat's trainer (the same encoder, `--mode`
# as given, top-3 by default) on the HH-RLHF harmless-base pairs of testdata/, CPU only, each under
# /usr/bin/time -v. TRL drops every pair with a side over --max-length tokens; Moat keeps them, cutting
# the context from the left. So Moat runs twice: on all the pairs, and on the pairs TRL kept (written
# out by the TRL script). Prints each side's pairs/s, held-out accuracy and peak RSS. Not part of CI.
#
#   bench/rm/run.sh [--threads 2] [--epochs 1] [--lr 5e-5] [--max-length 256] [--rows 1-2000]
#                   [--eval-rows 2001-2312] [--max-steps N] [--out DIR] [--moat-mode top-3] [--seed 0]
#
# TRL 1.16.0 and torch 2.15.0 come from PyPI into a virtual environment under $MOAT_CACHE/venv-trl the
# first time (about 3 minutes, 5.9 GB). PyPI's Linux torch wheel is the CUDA build: it pulls the nvidia-*
# and triton wheels (4 GB of the 5.9), unused here but needed for `import torch`, and PyPI has no CPU-only
# torch. `--max-steps 5 --eval-rows 2001-2040` is a quick probe (about a minute).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=../../scripts/env.sh
source "$root/scripts/env.sh"

threads=2
moat_mode=top-3
epochs=1
rows=1-2000
eval_rows=2001-2312
max_length=256
seed=0
moat_args=()
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --threads) threads="$2"; shift 2 ;;
        --moat-mode) moat_mode="$2"; shift 2 ;;
        --epochs) epochs="$2"; args+=("$1" "$2"); shift 2 ;;
        --rows) rows="$2"; args+=("$1" "$2"); shift 2 ;;
        --eval-rows) eval_rows="$2"; args+=("$1" "$2"); shift 2 ;;
        --max-length) max_length="$2"; args+=("$1" "$2"); shift 2 ;;
        --max-steps) moat_args+=("$1" "$2"); args+=("$1" "$2"); shift 2 ;;
        --seed) seed="$2"; args+=("$1" "$2"); shift 2 ;;
        --lr|--out) args+=("$1" "$2"); shift 2 ;;
        *) echo "usage: $0 [--threads N] [--epochs N] [--lr X] [--max-length N] [--rows A-B] [--eval-rows A-B] [--max-steps N] [--out DIR] [--moat-mode top-N|head|lora] [--seed N]" >&2; exit 2 ;;
    esac
done

venv="$MOAT_CACHE/venv-trl"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import trl, torch" 2>/dev/null; then
    echo "installing trl 1.16.0 and torch 2.15.0 into $venv (several GB, a few minutes)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    "$venv/bin/pip" install --quiet "trl==1.16.0" "torch==2.15.0" "transformers==5.24.0" "accelerate==1.15.0" \
        "datasets==5.2.0" >&2
fi
if [ ! -x /usr/bin/time ]; then
    apt-get install -y time >/dev/null
fi

model="$("$root/scripts/fetch-minilm.sh")"
data="$root/testdata/hh-rlhf/harmless-base-test.jsonl.gz"

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
log="$(mktemp)"
kept="$(mktemp -d)"
trap 'rm -rf "$log" "$kept"' EXIT
# Moat's trainer, built first so that the build is not timed against anything.
(cd "$root" && cargo build -q --release -p moat-trainer --example moat_train)
moat="$CARGO_TARGET_DIR/release/examples/moat_train"
# TRL's side. OMP_NUM_THREADS matches torch.set_num_threads; the tokenizer (run once, before training) is
# kept single-threaded.
TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS="$threads" CUDA_VISIBLE_DEVICES="" \
    /usr/bin/time -v -o "$log" "$venv/bin/python" "$root/bench/rm/trl_reward.py" \
    --data "$data" --model-dir "$model" --threads "$threads" --kept-out "$kept" "${args[@]}"
echo "trl process: $(grep -E 'Maximum resident set size' "$log" | sed -E 's/.*: ([0-9]+)/\1/' | awk '{printf "peak RSS %.0f MB", $1 / 1024}'), wall $(grep 'Elapsed (wall clock)' "$log" | sed 's/.*): //'), CPU $(grep 'Percent of CPU' "$log" | sed 's/.*: //')"
echo "load after TRL: $(cut -d' ' -f1-3 /proc/loadavg)"


# Moat's side: the same encoder, pairs, epochs, threads and seed, and one optimizer step per batch of 8
# pairs as TRL takes (Moat's bert default accumulates two batches per step: half as many steps). The example binary uses glibc's
# allocator; the MALLOC_* setting keeps attention-sized buffers instead of returning them to the kernel
# at every step (trainer/BENCHMARKS.md; the `moat` binary gets the same from mimalloc).
moat_run() {
    local label="$1"; shift
    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824 \
        /usr/bin/time -v -o "$log" "$moat" train "$@" --backbone bert --model-dir "$model" \
        --mode "$moat_mode" --epochs "$epochs" --max-length "$max_length" --threads "$threads" --seed "$seed" \
        --grad-accum 1 --out "$kept/moat-$label" --quiet "${moat_args[@]}" > "$kept/moat-$label.txt"
    echo "moat $moat_mode, $label: $(grep -E 'pairs/s' "$kept/moat-$label.txt" | head -1 | sed 's/^ *//')"
    echo "moat $moat_mode, $label: $(grep -E '^held-out' "$kept/moat-$label.txt" | head -1)"
    echo "moat $moat_mode, $label: $(grep -E 'Maximum resident set size' "$log" | sed -E 's/.*: ([0-9]+)/\1/' | awk '{printf "peak RSS %.0f MB", $1 / 1024}'), wall $(grep 'Elapsed (wall clock)' "$log" | sed 's/.*): //'), CPU $(grep 'Percent of CPU' "$log" | sed 's/.*: //')"
}
moat_run "all pairs" --data "$data" --rows "$rows" --eval "$data" --eval-rows "$eval_rows"
moat_run "the pairs TRL kept" --data "$kept/train.jsonl" --eval "$kept/eval.jsonl"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
