#!/usr/bin/env python3
"""Loads every file Moat exported into a directory with real clients (Hugging Face `datasets` and
pyarrow) and checks it against the `manifest.json` written beside the files: row count, column names
and types, and the first decoded row. Also loads the dataset card's configs with `datasets`.

Usage:
    cargo run -p moat-exports --example write_samples -- DIR
    python exports/tests/python/check_clients.py DIR

Exit status 0 when every check passes; otherwise each failure is printed and the status is 1.
"""

import csv
import json
import os
import sys
import tempfile
from pathlib import Path

# Everything is local: never reach the Hub.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import datasets  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.json as pa_json  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

MESSAGE = pa.struct([pa.field("role", pa.string(), nullable=False), pa.field("content", pa.string(), nullable=False)])
MESSAGES = pa.list_(pa.field("item", MESSAGE, nullable=False))
INPUT = pa.struct([pa.field("messages", MESSAGES, nullable=False)])
ARROW_TYPES = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "messages": MESSAGES,
    "input": INPUT,
}

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def loose(arrow_type):
    """A type's shape without nullability or large/small variants, for readers that infer types."""
    if pa.types.is_large_string(arrow_type) or pa.types.is_string(arrow_type):
        return "string"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return ["list", loose(arrow_type.value_type)]
    if pa.types.is_struct(arrow_type):
        return ["struct", [(arrow_type.field(i).name, loose(arrow_type.field(i).type)) for i in range(arrow_type.num_fields)]]
    return str(arrow_type)


def check_schema(label, schema, columns, exact):
    names = [field.name for field in schema]
    expected_names = [column["name"] for column in columns]
    if not check(names == expected_names, f"{label}: columns {names} != {expected_names}"):
        return
    for field, column in zip(schema, columns):
        expected = ARROW_TYPES[column["type"]]
        if exact:
            check(field.type.equals(expected), f"{label}: column {field.name} has type {field.type}, expected {expected}")
            check(field.nullable == column["nullable"], f"{label}: column {field.name} nullable={field.nullable}")
        else:
            check(loose(field.type) == loose(expected), f"{label}: column {field.name} has type {field.type}, expected {expected}")


def check_parquet(directory, entry, cache):
    path = directory / entry["path"]
    label = f"{entry['path']} (pyarrow)"
    table = pq.read_table(path)
    check(table.num_rows == entry["rows"], f"{label}: {table.num_rows} rows, expected {entry['rows']}")
    check_schema(label, table.schema, entry["columns"], exact=True)
    if entry["rows"]:
        check(table.slice(0, 1).to_pylist()[0] == entry["first_row"], f"{label}: first row differs")
    label = f"{entry['path']} (datasets)"
    dataset = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=cache)
    check_dataset(label, dataset, entry)


def check_dataset(label, dataset, entry):
    check(dataset.num_rows == entry["rows"], f"{label}: {dataset.num_rows} rows, expected {entry['rows']}")
    check_schema(label, dataset.features.arrow_schema, entry["columns"], exact=False)
    if entry["rows"]:
        check(dataset[0] == entry["first_row"], f"{label}: first row differs:\n  {dataset[0]}\n  {entry['first_row']}")


def check_jsonl(directory, entry, cache):
    path = directory / entry["path"]
    label = f"{entry['path']} (pyarrow)"
    table = pa_json.read_json(path)
    check(table.num_rows == entry["rows"], f"{label}: {table.num_rows} rows, expected {entry['rows']}")
    check_schema(label, table.schema, entry["columns"], exact=False)
    if entry["rows"]:
        check(table.slice(0, 1).to_pylist()[0] == entry["first_row"], f"{label}: first row differs")
    dataset = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache)
    check_dataset(f"{entry['path']} (datasets)", dataset, entry)


def csv_value(text, column):
    if column["nullable"] and text == "":
        return None
    kind = column["type"]
    if kind == "int64":
        return int(text)
    if kind == "float64":
        return float(text)
    if kind == "bool":
        return {"true": True, "false": False}[text]
    if kind in ("messages", "input"):
        return json.loads(text)
    # Moat writes text that a spreadsheet would run as a formula with a leading ' (CSV injection).
    if text[:1] == "'" and text[1:2] in ("=", "+", "-", "@", "\t", "\r"):
        return text[1:]
    return text


def check_csv(directory, entry, cache):
    path = directory / entry["path"]
    label = f"{entry['path']} (csv)"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    check(header == [column["name"] for column in entry["columns"]], f"{label}: header {header}")
    check(len(body) == entry["rows"], f"{label}: {len(body)} rows, expected {entry['rows']}")
    if body:
        decoded = {column["name"]: csv_value(text, column) for text, column in zip(body[0], entry["columns"])}
        check(decoded == entry["first_row"], f"{label}: first row differs")
    dataset = datasets.load_dataset("csv", data_files=str(path), split="train", cache_dir=cache)
    check(dataset.num_rows == entry["rows"], f"{entry['path']} (datasets): {dataset.num_rows} rows")
    check(dataset.column_names == header, f"{entry['path']} (datasets): columns {dataset.column_names}")


def card_configs(header):
    """(config, [(split, path)]) from the README's YAML header, which Moat writes one key per line."""
    configs = []
    for line in header.splitlines():
        value = json.loads(line.split(": ", 1)[1]) if ": " in line else None
        if line.startswith("- config_name: "):
            configs.append((value, []))
        elif line.startswith("  - split: "):
            configs[-1][1].append([value, None])
        elif line.startswith("    path: "):
            configs[-1][1][-1][1] = value
    return configs


def check_card(directory, manifest, cache):
    """Loads each config the README's YAML header declares, the way `load_dataset(repo, config)` does."""
    readme = (directory / "README.md").read_text(encoding="utf-8")
    if not check(readme.startswith("---\n"), "README.md: no YAML header"):
        return
    rows_by_path = {entry["path"]: entry["rows"] for entry in manifest["files"]}
    configs = card_configs(readme[4:].split("\n---\n", 1)[0])
    check(len(configs) > 0, "README.md: no configs")
    for config, data_files in configs:
        loaded = datasets.load_dataset(str(directory), config, cache_dir=cache)
        check(sorted(loaded) == sorted(split for split, _ in data_files), f"README.md config {config}: splits {sorted(loaded)}")
        for split, path in data_files:
            if check(path in rows_by_path, f"README.md config {config}: {path} is not in the manifest") and split in loaded:
                rows = loaded[split].num_rows
                check(rows == rows_by_path[path], f"README.md config {config}/{split}: {rows} rows, expected {rows_by_path[path]}")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    directory = Path(sys.argv[1])
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    checkers = {"parquet": check_parquet, "jsonl": check_jsonl, "csv": check_csv}
    with tempfile.TemporaryDirectory() as cache:
        for entry in manifest["files"]:
            checkers[entry["container"]](directory, entry, cache)
        check_card(directory, manifest, cache)
    files = len(manifest["files"])
    if failures:
        for failure in failures:
            print("FAIL", failure)
        print(f"{len(failures)} failures in {files} files")
        return 1
    print(f"ok: {files} files checked with pyarrow {pa.__version__} and datasets {datasets.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
