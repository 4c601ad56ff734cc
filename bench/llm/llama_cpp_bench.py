"""llama.cpp (through llama-cpp-python) measured the way llm/benches/local.rs measures Moat.

Prompt processing is the prompt's token count over the time to the first streamed token; generation is
the tokens after the first over the time after the first. Greedy (temperature 0), the same rendered
prompt, the same thread count, the median of a few runs after one warm-up run.

    python3 llama_cpp_bench.py --gguf PATH --prompt-file FILE [--threads 2] [--runs 5] [--tokens 128]
"""

import argparse
import statistics
import time

from llama_cpp import Llama


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--prompt-file", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    with open(args.prompt_file, encoding="utf-8") as f:
        prompt = f.read()
    llm = Llama(
        model_path=args.gguf,
        n_ctx=2048,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    prompt_tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def run() -> tuple[float, float, int]:
        # A fresh KV cache each run, as Moat's engine starts each request from position 0.
        llm.reset()
        started = time.perf_counter()
        first = None
        count = 0
        for _chunk in llm.create_completion(
            prompt_tokens,
            max_tokens=args.tokens,
            temperature=0.0,
            top_k=1,
            stream=True,
        ):
            count += 1
            if first is None:
                first = time.perf_counter() - started
        total = time.perf_counter() - started
        return len(prompt_tokens) / first, (count - 1) / (total - first), count

    run()
    results = [run() for _ in range(args.runs)]
    prompt_rate = statistics.median(r[0] for r in results)
    generation_rate = statistics.median(r[1] for r in results)
    generated = results[-1][2]
    print(f"llama.cpp (llama-cpp-python) {args.gguf} threads={args.threads}")
    print(
        f"prompt processing: {prompt_rate:.1f} tokens/s "
        f"({len(prompt_tokens)} prompt tokens, median of {args.runs} runs)"
    )
    print(
        f"generation: {generation_rate:.1f} tokens/s "
        f"({generated} tokens greedy, median of {args.runs} runs)"
    )


if __name__ == "__main__":
    main()
