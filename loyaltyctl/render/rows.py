"""Rows of an export written as CSV (header row) or JSON Lines (one object a line)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from typing import IO, Any

FORMATS = ("csv", "jsonl")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def write_rows(
    handle: IO[str], fmt: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Write every row; returns how many."""
    count = 0
    if fmt == "csv":
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(v) for v in row])
            count += 1
        return count
    if fmt == "jsonl":
        for row in rows:
            handle.write(json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False))
            handle.write("\n")
            count += 1
        return count
    raise ValueError(f"unknown export format {fmt!r}")
