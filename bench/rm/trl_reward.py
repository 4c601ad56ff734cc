"""Hugging Face TRL's RewardTrainer on HH-RLHF pairs, the reference side of bench/rm/run.sh.

Measures full fine-tuning of all-MiniLM-L6-v2 (AutoModelForSequenceClassification, one output: BERT's
pooler on [CLS], then a linear head) with the Bradley-Terry loss on CPU: pairs kept and dropped by
TRL's length filter, training-loop seconds and pairs/s, held-out accuracy (chosen reward > rejected
reward) and peak RSS. The last lines are a `key: value` summary.

Pairs are tokenised here ([CLS] transcript [SEP], as the BERT tokenizer does) and handed to TRL as
`chosen_ids`/`rejected_ids`, a processed dataset that TRL 1.16 accepts as is: with text columns it
would append `tokenizer.eos_token`, which BERT's tokenizer does not have. TRL then drops, as it does
for text, every pair with a side longer than max_length. Settings other than TRL's defaults: fp32
(TRL turns bf16 on by default), no gradient (activation) checkpointing (on by default), lr 5e-5
(1e-4), 1 epoch (3), seed 0. Otherwise TRL's: AdamW, linear decay, no warmup, no weight decay, dropout
off, gradient norm clipped at 1.
"""

import argparse
import gzip
import json
import resource
import time

import torch
from datasets import Dataset
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from trl import RewardConfig, RewardTrainer


def load_pairs(path, rows):
    first, last = (int(x) for x in rows.split("-"))
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line for i, line in enumerate(f, start=1) if first <= i <= last]
    return [json.loads(line) for line in lines]


def tokenize(tokenizer, pairs, **kwargs):
    chosen = tokenizer([p["chosen"] for p in pairs], **kwargs)["input_ids"]
    rejected = tokenizer([p["rejected"] for p in pairs], **kwargs)["input_ids"]
    return Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})


@torch.no_grad()
def rewards(model, pad_id, ids, batch_size=16):
    model.eval()
    out = []
    for i in range(0, len(ids), batch_size):
        seqs = [torch.tensor(x) for x in ids[i : i + batch_size]]
        input_ids = pad_sequence(seqs, batch_first=True, padding_value=pad_id)
        mask = torch.arange(input_ids.shape[1]) < torch.tensor([len(x) for x in seqs])[:, None]
        out.append(model(input_ids=input_ids, attention_mask=mask.long()).logits.squeeze(-1))
    return torch.cat(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="testdata/hh-rlhf/harmless-base-test.jsonl.gz")
    ap.add_argument("--model-dir", required=True, help="all-MiniLM-L6-v2 folder (scripts/fetch-minilm.sh)")
    ap.add_argument("--rows", default="1-2000", help="training rows, 1-based, inclusive")
    ap.add_argument("--eval-rows", default="2001-2312", help="held-out rows, 1-based, inclusive")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=-1, help="stop after N steps (a quick probe)")
    ap.add_argument("--out", default="/tmp/trl-reward")
    ap.add_argument("--seed", type=int, default=0, help="the head's initialisation and the data order")
    ap.add_argument(
        "--kept-out", help="folder to write the pairs TRL kept (train.jsonl, eval.jsonl) for the other side"
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    set_seed(args.seed)  # before loading: the head is initialised at random

    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    except (OSError, ValueError):  # a folder with tokenizer.json only
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=f"{args.model_dir}/tokenizer.json",
            unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
        )
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model_dir, num_labels=1, dtype=torch.float32
    )

    train_pairs = load_pairs(args.data, args.rows)
    eval_pairs = load_pairs(args.data, args.eval_rows)
    train = tokenize(tokenizer, train_pairs)
    evals = tokenize(tokenizer, eval_pairs)

    config = RewardConfig(
        output_dir=args.out,
        use_cpu=True,
        seed=args.seed,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        max_length=args.max_length,
        bf16=False,
        activation_checkpointing=False,  # transformers 5's name for gradient_checkpointing
        disable_dropout=True,  # TRL's default, stated
        center_rewards_coefficient=None,  # TRL's default, stated
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        logging_steps=25,
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(
        model=model, args=config, train_dataset=train, eval_dataset=evals, processing_class=tokenizer
    )
    train_used, eval_used = len(trainer.train_dataset), len(trainer.eval_dataset)

    start = time.perf_counter()
    metrics = trainer.train().metrics
    train_seconds = time.perf_counter() - start
    steps = trainer.state.global_step
    pairs_trained = min(steps * args.batch_size, round(train_used * args.epochs))

    # Held-out accuracy on every eval pair, over-long sides cut from the left (so that the last turns,
    # where chosen and rejected differ, are kept) to max_length tokens including [CLS] and [SEP]. On the
    # pairs TRL kept the cut changes nothing, so the same rewards give the accuracy on the kept pairs.
    tokenizer.truncation_side = "left"
    cut = tokenize(tokenizer, eval_pairs, truncation=True, max_length=args.max_length)
    chosen = rewards(trainer.model, tokenizer.pad_token_id, cut["chosen_ids"])
    rejected = rewards(trainer.model, tokenizer.pad_token_id, cut["rejected_ids"])
    correct = chosen > rejected
    kept = torch.tensor(
        [max(len(c), len(r)) <= args.max_length for c, r in zip(evals["chosen_ids"], evals["rejected_ids"])]
    )
    assert int(kept.sum()) == eval_used, "the kept eval pairs differ from TRL's filter"

    if args.kept_out:
        import os

        os.makedirs(args.kept_out, exist_ok=True)
        for name, pairs, ids in (("train", train_pairs, train), ("eval", eval_pairs, evals)):
            fits = [max(len(c), len(r)) <= args.max_length for c, r in zip(ids["chosen_ids"], ids["rejected_ids"])]
            with open(f"{args.kept_out}/{name}.jsonl", "w", encoding="utf-8") as f:
                for pair, keep in zip(pairs, fits):
                    if keep:
                        f.write(json.dumps(pair) + "\n")

    summary = {
        "trl train pairs used": train_used,
        "trl train pairs dropped (a side > max_length tokens)": len(train) - train_used,
        "trl eval pairs used": eval_used,
        "trl eval pairs dropped (a side > max_length tokens)": len(evals) - eval_used,
        "trl steps": steps,
        "trl pairs trained (pairs used x epochs, or steps x batch)": pairs_trained,
        "trl train seconds (trainer.train)": f"{train_seconds:.1f}",
        "trl train_runtime (transformers' own timer)": f"{metrics['train_runtime']:.1f}",
        "trl train pairs/s": f"{pairs_trained / train_seconds:.2f}",
        "trl held-out accuracy, kept eval pairs": f"{correct[kept].float().mean().item():.3f}",
        "trl held-out accuracy, all eval pairs (over-long cut from the left)": f"{correct.float().mean().item():.3f}",
        "trl peak RSS MB": f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}",
    }
    for key, value in summary.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
