#!/usr/bin/env python3
"""The straightforward Python baseline of issue 4: the study's decided votes out of SQLite into TRL
JSON Lines (pandas `read_sql` + `DataFrame.to_json(lines=True)`) or Parquet (pyarrow
`Table.from_pandas` + `pq.write_table`, its default Snappy compression).

It runs the same join as Moat's export (votes, assignments, prompts, raters, left/right responses and
their models), keeps left/right votes only (TRL has no ties), and writes the same columns as
`moat export --format trl`: prompt, chosen, rejected, study, model_chosen, model_rejected, rater,
vote_id, created (RFC 3339 UTC with milliseconds). Prints one JSON line with rows and timings.
"""

import argparse
import json
import sqlite3
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

QUERY = """
SELECT v.id AS vote_id, v.choice, v.created_ms, p.conversation, s.slug AS study, r.pseudonym AS rater,
       lm.name AS left_model, lr.content AS left_text, rm.name AS right_model, rr.content AS right_text
FROM votes v
JOIN assignments a ON a.id = v.assignment_id
JOIN prompts p ON p.id = a.prompt_id
JOIN studies s ON s.id = p.study_id
JOIN raters r ON r.id = a.rater_id
JOIN responses lr ON lr.id = a.left_response_id JOIN models lm ON lm.id = lr.model_id
JOIN responses rr ON rr.id = a.right_response_id JOIN models rm ON rm.id = rr.model_id
WHERE s.slug = ? AND v.choice IN ('left', 'right')
ORDER BY v.id
"""

COLUMNS = ["prompt", "chosen", "rejected", "study", "model_chosen", "model_rejected", "rater", "vote_id", "created"]


def prompt_text(conversation: str) -> str:
    turns = json.loads(conversation)
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    return "\n\n".join(f"{t['role']}: {t['content']}" for t in turns)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("db")
    ap.add_argument("--study", default="bench")
    ap.add_argument("--format", choices=["jsonl", "parquet"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--chunksize", type=int, default=0,
                    help="not part of the straightforward baseline: read_sql in chunks of this many rows and "
                         "append each (to_json mode='a' / pq.ParquetWriter), so memory stays bounded")
    args = ap.parse_args()

    t0 = time.perf_counter()
    con = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
    if args.chunksize:
        return chunked(con, args, t0)
    df = pd.read_sql(QUERY, con, params=(args.study,))
    con.close()
    t_read = time.perf_counter()

    out = trl_frame(df)
    del df
    t_build = time.perf_counter()

    if args.format == "jsonl":
        out.to_json(args.out, orient="records", lines=True, force_ascii=False)
    else:
        table = pa.Table.from_pandas(out, preserve_index=False)
        pq.write_table(table, args.out)
    t_write = time.perf_counter()
    report(args, len(out), t0, t_write, read_s=t_read - t0, build_s=t_build - t_read, write_s=t_write - t_build)
    return 0


def chunked(con, args, t0) -> int:
    rows = 0
    writer = None
    if args.format == "jsonl":
        open(args.out, "w").close()
    for df in pd.read_sql(QUERY, con, params=(args.study,), chunksize=args.chunksize):
        out = trl_frame(df)
        rows += len(out)
        if args.format == "jsonl":
            out.to_json(args.out, orient="records", lines=True, force_ascii=False, mode="a")
        else:
            table = pa.Table.from_pandas(out, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(args.out, table.schema)
            writer.write_table(table)
    if writer is not None:
        writer.close()
    con.close()
    report(args, rows, t0, time.perf_counter(), chunksize=args.chunksize)
    return 0


def report(args, rows, t0, t_end, **extra) -> None:
    print(json.dumps({
        "tool": f"pandas {pd.__version__} / pyarrow {pa.__version__}",
        "format": args.format,
        "rows": rows,
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in extra.items()},
        "wall_s": round(t_end - t0, 3),
        "rows_per_s": round(rows / (t_end - t0)),
    }))


def trl_frame(df: pd.DataFrame) -> pd.DataFrame:
    left = (df["choice"] == "left").to_numpy()
    return pd.DataFrame({
        "prompt": df["conversation"].map(prompt_text),
        "chosen": np.where(left, df["left_text"], df["right_text"]),
        "rejected": np.where(left, df["right_text"], df["left_text"]),
        "study": df["study"],
        "model_chosen": np.where(left, df["left_model"], df["right_model"]),
        "model_rejected": np.where(left, df["right_model"], df["left_model"]),
        "rater": df["rater"],
        "vote_id": df["vote_id"].astype("int64"),
        "created": pd.to_datetime(df["created_ms"], unit="ms", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.")
        + (df["created_ms"] % 1000).astype(str).str.zfill(3) + "Z",
    })[COLUMNS]


if __name__ == "__main__":
    sys.exit(main())
