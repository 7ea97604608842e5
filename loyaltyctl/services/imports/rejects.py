"""Rejected rows: why each was refused, and the rejects file that lists them in the
input's format."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loyaltyctl.errors import Conflict, InvalidInput, LoyaltyError, NotAllowed, NotFound
from loyaltyctl.services.files import OutputFile, write_error

if TYPE_CHECKING:
    from loyaltyctl.services.imports.reading import ImportFile, SourceRow


@dataclass
class Rejected:
    row: SourceRow
    reason: str


_LABELS: tuple[tuple[type[LoyaltyError], str], ...] = (
    (NotFound, "not found"),
    (Conflict, "conflict"),
    (NotAllowed, "not allowed"),
    (InvalidInput, "invalid"),
)


def reason_of(exc: LoyaltyError) -> str:
    for cls, label in _LABELS:
        if isinstance(exc, cls):
            return f"{label}: {exc.message}"
    return exc.message


class RejectsFile:
    """Rejected rows in the input's format, each with its ``line`` and ``reason`` first.

    A txn import's own ``reason`` column (why points were adjusted) is kept as
    ``adjust_reason``, since ``reason`` says why the row was rejected."""

    def __init__(self, path: Path, source: ImportFile) -> None:
        self.path = path
        self.format = source.format
        # Written beside its name and renamed into place when the import ends.
        self._file = OutputFile(
            path, what="--rejects", newline="" if self.format == "csv" else None
        )
        self._fh = self._file.open()
        self._csv: Any = None
        if self.format == "csv":
            self._csv = csv.writer(self._fh)
            data = source.header[source.meta :]
            self._csv.writerow([*REJECT_COLUMNS, *(_renamed(n) for n in data)])
        self._meta = source.meta

    def write(self, rejected: Sequence[Rejected]) -> None:
        for item in rejected:
            row = item.row
            if self._csv is not None:
                self._csv.writerow([row.line, item.reason, *row.original[self._meta :]])
                continue
            self._fh.write(_json_reject(row.line, item.reason, row.original) + "\n")
        try:
            self._fh.flush()
        except OSError as exc:
            self._file.abort()
            raise write_error(self.path, exc, "--rejects") from exc

    def close(self) -> None:
        """The rows rejected so far, in place: also after a failure part-way, since the
        batches committed before it had those rows refused."""
        self._file.commit()


REJECT_COLUMNS = ("line", "reason")


def _renamed(name: str) -> str:
    return "adjust_reason" if name == "reason" else name


def restored_name(name: str) -> str:
    return "reason" if name == "adjust_reason" else name


def rejected_row(obj: dict[str, Any]) -> dict[str, Any]:
    """A JSON line of a rejects file as the row it was: without the line and reason it
    was refused with, ``adjust_reason`` back to ``reason``."""
    return {restored_name(k): v for k, v in obj.items() if k not in REJECT_COLUMNS}


# ---------------------------------------------------------------------------------------
# Rules of each program version, with the derived values a batch needs per row


def _json_reject(line: int, reason: str, original: str) -> str:
    """A JSON Lines reject: ``line`` and ``reason`` first, then the row as it was written
    (its numbers, spacing and escapes untouched). A row of an earlier rejects file, or
    one with its own ``reason`` field (kept as ``adjust_reason``), is rebuilt instead;
    a line that is not a JSON object is kept whole as ``raw``."""
    head = {"line": line, "reason": reason}
    try:
        obj = json.loads(original)
    except (ValueError, RecursionError):
        obj = None
    text = original.strip()
    if isinstance(obj, dict) and "line" not in obj and "reason" not in obj:
        body = text[1:].lstrip()
        opening = json.dumps(head, ensure_ascii=False)[:-1]
        return opening + ("}" if body.startswith("}") else ", " + body)
    if isinstance(obj, dict):
        if "line" in obj:
            obj = rejected_row(obj)
        out: dict[str, Any] = {**head, **{_renamed(k): v for k, v in obj.items()}}
    else:
        out = {**head, "raw": original}
    try:
        return json.dumps(out, ensure_ascii=False).encode("utf-8").decode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (``"\\ud800"``) is kept as the escape it was written as.
        return json.dumps(out, ensure_ascii=True)
