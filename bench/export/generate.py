#!/usr/bin/env python3
"""Fills a migrated Moat SQLite database with one large generated study for the export benchmark.

The database must already exist with Moat's schema (run.sh lets `moat` create and migrate it).
Deterministic for a given --seed: the same arguments always give the same rows.

Default shape (issue 4): study `bench`, 3 models, 100,000 prompts (~300 characters, one user turn),
one response (~1,000 characters) per prompt and model, 5,000 raters, 1,000,000 assignments and votes
(10 per prompt, each by a different rater, over a random pair of models in random left/right order).
Choices: 45% left, 45% right, 5% tie, 5% both_bad.

Text is drawn from a skewed (Zipf-like) vocabulary of 4,096 pseudo-words, with some non-ASCII words,
quotes, backslashes and newlines so JSON encoders have escaping to do. Each prompt and response also
starts with its own id, so no two text values are equal.
"""

import argparse
import hashlib
import json
import sqlite3
import sys
import time

import numpy as np

BASE_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
MODELS = [("model-alpha", "open"), ("model-beta", "closed"), ("model-gamma", "open")]
PAIRS = [(0, 1), (0, 2), (1, 2)]
CHOICES = np.array(["left", "right", "tie", "both_bad"])
CHOICE_P = [0.45, 0.45, 0.05, 0.05]
SPECIAL = ["café", "naïve", "Zürich", "東京", "«ok»", "\"quoted\"", "back\\slash", "tab\there", "line\nbreak", "€5", "—"]


def vocabulary(rng: np.random.Generator, size: int = 4096) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = set()
    while len(words) < size - len(SPECIAL):
        n = int(rng.integers(2, 10))
        words.add("".join(rng.choice(letters, n)))
    return np.array(sorted(words) + SPECIAL, dtype=object)


class TextMaker:
    """Texts of about `chars` characters from a Zipf-weighted vocabulary, made in bulk with numpy."""

    def __init__(self, rng: np.random.Generator, vocab: np.ndarray):
        self.rng = rng
        # Shuffle so the special words land at random ranks, then weight rank r by 1/(r+10).
        self.vocab = vocab[rng.permutation(len(vocab))]
        weights = 1.0 / (np.arange(len(vocab)) + 10.0)
        self.p = weights / weights.sum()
        self.mean_len = float((np.array([len(w) for w in self.vocab]) + 1) @ self.p)

    def texts(self, count: int, chars: int, prefix: str) -> list:
        words_per = max(1, int(round(chars / self.mean_len)))
        idx = self.rng.choice(len(self.vocab), size=(count, words_per), p=self.p)
        picked = self.vocab[idx]
        out = []
        for i in range(count):
            body = " ".join(picked[i])
            out.append(f"{prefix}{i} {body}"[: chars + 40])
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db", help="path of the migrated SQLite file")
    ap.add_argument("--prompts", type=int, default=100_000)
    ap.add_argument("--votes-per-prompt", type=int, default=10)
    ap.add_argument("--raters", type=int, default=5_000)
    ap.add_argument("--prompt-chars", type=int, default=300)
    ap.add_argument("--response-chars", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--batch", type=int, default=5_000, help="prompts per insert batch")
    args = ap.parse_args()

    if args.raters < args.votes_per_prompt:
        sys.exit("need at least as many raters as votes per prompt (a rater sees a prompt once)")
    rng = np.random.default_rng(args.seed)
    maker = TextMaker(rng, vocabulary(rng))
    started = time.time()

    con = sqlite3.connect(args.db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA foreign_keys=ON")
    if con.execute("SELECT COUNT(*) FROM studies WHERE slug = 'bench'").fetchone()[0]:
        sys.exit("study 'bench' already exists in this database")
    con.execute("BEGIN")
    cur = con.cursor()
    cur.execute(
        "INSERT INTO studies (slug, title, instructions, status, settings, created_ms) VALUES (?,?,?,?,?,?)",
        ("bench", "Export benchmark (generated)", "Pick the better answer.", "closed", "{}", BASE_MS),
    )
    study_id = cur.lastrowid
    model_ids = []
    for name, openness in MODELS:
        cur.execute(
            "INSERT INTO models (study_id, name, provider, openness, version) VALUES (?,?,?,?,?)",
            (study_id, name, "bench", openness, "1"),
        )
        model_ids.append(cur.lastrowid)

    rater_rows = []
    for i in range(args.raters):
        token_hash = hashlib.sha256(f"bench-token-{args.seed}-{i}".encode()).hexdigest()
        rater_rows.append((study_id, f"ext-{i:05d}", token_hash, f"rater-{i:05d}", "active", BASE_MS + i))
    cur.executemany(
        "INSERT INTO raters (study_id, external_id, token_hash, pseudonym, status, created_ms) VALUES (?,?,?,?,?,?)",
        rater_rows,
    )
    first_rater = cur.execute("SELECT MIN(id) FROM raters WHERE study_id = ?", (study_id,)).fetchone()[0]

    vpp = args.votes_per_prompt
    stride = args.raters // vpp  # raters of one prompt are `stride` apart, so all distinct
    pair_shown = [0, 0, 0]
    next_prompt = cur.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM prompts").fetchone()[0]
    next_response = cur.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM responses").fetchone()[0]
    next_assignment = cur.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM assignments").fetchone()[0]
    vote_seq = 0
    for start in range(0, args.prompts, args.batch):
        n = min(args.batch, args.prompts - start)
        prompt_texts = maker.texts(n, args.prompt_chars, f"Q{start}+")
        response_texts = maker.texts(n * len(MODELS), args.response_chars, f"A{start}+")
        prompts, responses, assignments, votes = [], [], [], []
        pair_pick = rng.integers(0, len(PAIRS), size=(n, vpp))
        swap = rng.integers(0, 2, size=(n, vpp))
        choice = rng.choice(CHOICES, size=(n, vpp), p=CHOICE_P)
        gaps = rng.integers(1_000, 60_000, size=(n, vpp))
        for k in range(n):
            p = start + k
            pid = next_prompt + p
            conversation = json.dumps([{"role": "user", "content": prompt_texts[k]}], ensure_ascii=False)
            prompts.append((pid, study_id, f"p{p:06d}", conversation, "bench", "en", vpp))
            rids = []
            for m in range(len(MODELS)):
                rid = next_response + p * len(MODELS) + m
                rids.append(rid)
                responses.append((rid, pid, model_ids[m], response_texts[k * len(MODELS) + m], "{}"))
            for j in range(vpp):
                a, b = PAIRS[pair_pick[k, j]]
                pair_shown[pair_pick[k, j]] += 1
                left, right = (b, a) if swap[k, j] else (a, b)
                aid = next_assignment + p * vpp + j
                rater = first_rater + (p * 7 + j * stride) % args.raters
                vote_seq += 1
                created = BASE_MS + vote_seq * 250 + int(gaps[k, j])
                assignments.append(
                    (aid, f"asg-{args.seed}-{p:06d}-{j:02d}", rater, pid, rids[left], rids[right],
                     model_ids[a], model_ids[b], "regular", created - int(gaps[k, j]), None, "done")
                )
                votes.append((aid, str(choice[k, j]), None, None, None, int(gaps[k, j]), created))
        cur.executemany(
            "INSERT INTO prompts (id, study_id, external_id, conversation, category, language, times_assigned) "
            "VALUES (?,?,?,?,?,?,?)",
            prompts,
        )
        cur.executemany(
            "INSERT INTO responses (id, prompt_id, model_id, content, metadata) VALUES (?,?,?,?,?)", responses
        )
        cur.executemany(
            "INSERT INTO assignments (id, public_id, rater_id, prompt_id, left_response_id, right_response_id, "
            "model_low, model_high, kind, issued_ms, expires_ms, state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            assignments,
        )
        cur.executemany(
            "INSERT INTO votes (assignment_id, choice, source_guess, source_confidence, rationale, "
            "time_on_page_ms, created_ms) VALUES (?,?,?,?,?,?,?)",
            votes,
        )
        done = start + n
        if done % 20_000 == 0 or done == args.prompts:
            print(f"  {done:,} prompts, {vote_seq:,} votes, {time.time() - started:.0f} s", file=sys.stderr)
    for (a, b), shown in zip(PAIRS, pair_shown):
        cur.execute(
            "INSERT INTO pair_counts (study_id, model_low, model_high, shown) VALUES (?,?,?,?)",
            (study_id, model_ids[a], model_ids[b], shown),
        )
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("ANALYZE")
    counts = con.execute(
        "SELECT choice, COUNT(*) FROM votes GROUP BY choice ORDER BY choice"
    ).fetchall()
    con.close()
    print(f"generated study 'bench': {args.prompts:,} prompts, {vote_seq:,} votes {dict(counts)} "
          f"in {time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
