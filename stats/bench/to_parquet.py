"""Writes an Arena battles JSON Lines file as Parquet with pyarrow (nested conv_metadata becomes
nested structs, as in LMArena's published Parquet files), for the Parquet side of the end-to-end
benchmark (stats/bench/run.sh with PARQUET=1).

    python to_parquet.py BATTLES.jsonl BATTLES.parquet
"""
import sys

import pyarrow.json as pj
import pyarrow.parquet as pq

source, target = sys.argv[1], sys.argv[2]
table = pj.read_json(source, read_options=pj.ReadOptions(block_size=64 << 20))
pq.write_table(table, target, row_group_size=1 << 20)
print(f"wrote {table.num_rows} battles to {target}")
