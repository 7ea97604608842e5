"""Reading import files: CSV with a header row or JSON Lines, columns in any order,
unknown ones refused for the whole file."""

from __future__ import annotations

import csv
import itertools
import json
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from loyaltyctl.errors import InvalidInput
from loyaltyctl.services.imports.rejects import REJECT_COLUMNS, rejected_row, restored_name

MEMBER_COLUMNS = (
    "member",
    "name",
    "email",
    "phone",
    "birthday",
    "enrolled_at",
    "opening_balance",
    "opening_expires",
)
TXN_COLUMNS = (
    "type",
    "member",
    "ref",
    "amount",
    "at",
    "category",
    "original",
    "points",
    "reason",
    "store",
)
FORMATS = ("csv", "jsonl")
# Till exports use these; the header line says which (the one it holds most of).
DELIMITERS = (",", ";", "\t")


@dataclass(frozen=True)
class Layout:
    """The columns one kind of import accepts."""

    name: str
    columns: tuple[str, ...]
    required: tuple[str, ...]


MEMBER_LAYOUT = Layout("member import", MEMBER_COLUMNS, ("member",))
TXN_LAYOUT = Layout("txn import", TXN_COLUMNS, ("member", "ref"))


class SourceRow:
    """One data row: values in the layout's column order ("" when absent), what was read
    (for the rejects file) and a problem found while reading, if any."""

    __slots__ = ("line", "values", "original", "problem")

    def __init__(self, line: int, values: list[str], original: Any, problem: str | None) -> None:
        self.line = line
        self.values = values
        self.original = original
        self.problem = problem


def detect_format(path: Path, fmt: str | None) -> str:
    if fmt:
        chosen = fmt.strip().lower()
        if chosen not in FORMATS:
            raise InvalidInput(f"unknown format {fmt!r}", hint="use --format csv or --format jsonl")
        return chosen
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    raise InvalidInput(
        f"cannot tell the format of {path} from its name",
        hint="name it .csv or .jsonl, or pass --format csv|jsonl",
    )


def detect_delimiter(header_line: str) -> str:
    """``,``, ``;`` or tab: whichever the header line holds most of (a comma on a tie)."""
    return max(DELIMITERS, key=header_line.count)


def csv_records(fh: TextIO, delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """``csv.reader``'s records with the line each starts on. A line without quotes, NUL
    or an overlong field is split on the delimiter directly (what the reader would make
    of it, several times faster); any other record is read by ``csv.reader``, whatever
    lines it spans. ``fh`` is opened with ``newline=""``."""
    lines = iter(fh)
    number = 0
    limit = csv.field_size_limit()
    for line in lines:
        number += 1
        if '"' in line or "\x00" in line or len(line) > limit:
            reader = csv.reader(itertools.chain((line,), lines), delimiter=delimiter)
            fields = next(reader, [])
            yield number, fields
            number += reader.line_num - 1
            continue
        body = line.rstrip("\r\n")
        yield number, body.split(delimiter) if body else []


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


class _DuplicateField(ValueError):
    pass


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose field appears twice is refused: which value would count?"""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateField(f"field {key!r} appears twice")
        obj[key] = value
    return obj


def _is_text(value: str) -> bool:
    """False for a string with a lone surrogate (``"\\ud800"``), which no database or
    UTF-8 file can hold."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class ImportFile:
    """A CSV file with a header row, or JSON Lines; columns in any order, unknown ones
    refused for the whole file."""

    def __init__(
        self,
        path: Path,
        layout: Layout,
        fmt: str | None = None,
        *,
        rename: dict[str, str] | None = None,
        ignore: Iterable[str] = (),
    ) -> None:
        """``rename``: input column → the layout's name for it (``--map``); ``ignore``:
        input columns skipped (``--ignore``), both by the names the file uses."""
        self.path = path
        self.layout = layout
        self.format = detect_format(path, fmt)
        if not path.is_file():
            raise InvalidInput(f"cannot read {path}: no such file")
        self.rename = dict(rename or {})
        self.ignore = frozenset(ignore)
        for source, target in self.rename.items():
            if target not in layout.columns:
                raise InvalidInput(
                    f"--map {source}={target}: {target!r} is not a column of {layout.name}",
                    hint="columns: " + ", ".join(layout.columns),
                )
        self.delimiter = ","
        self.header: list[str] = []
        # Leading columns that are not data: ``line`` and ``reason`` of a rejects file.
        self.meta = 0
        self._index = {name: i for i, name in enumerate(layout.columns)}
        self._order: list[int] = []
        if self.format == "csv":
            self._read_header()

    # -- CSV

    def _open(self) -> TextIO:
        return self.path.open(encoding="utf-8-sig", newline="" if self.format == "csv" else None)

    def _read_header(self) -> None:
        with self._open() as fh:
            try:
                first = next((line for line in fh if line.strip()), "")
                self.delimiter = detect_delimiter(first)
                header = next(csv.reader([first], delimiter=self.delimiter), None)
            except (UnicodeDecodeError, csv.Error) as exc:
                raise self._unreadable(exc) from exc
        if header is None:
            raise InvalidInput(
                f"{self.path} is empty: a CSV import needs a header row",
                hint="first line: " + ",".join(self.layout.columns),
            )
        names = [name.strip() for name in header]
        if names[: len(REJECT_COLUMNS)] == list(REJECT_COLUMNS):
            # A rejects file of an earlier import, fixed and imported again: its line and
            # reason say why the row was refused then and are not part of the row.
            self.meta = len(REJECT_COLUMNS)
        data = [self._name(restored_name(name)) for name in names[self.meta :]]
        self._check_names((n for n in data if n is not None), where=f"{self.path}:1")
        for name in self.layout.required:
            if name not in data:
                raise InvalidInput(
                    f"{self.path}:1: required column {name!r} is missing",
                    hint="columns: " + ", ".join(self.layout.columns),
                )
        self.header = names
        self._order = [data.index(c) + self.meta if c in data else -1 for c in self.layout.columns]

    def _name(self, name: str) -> str | None:
        """The layout's name of an input column; None for one ``--ignore`` skips."""
        if name in self.ignore:
            return None
        return self.rename.get(name, name)

    def _check_names(self, names: Iterable[str], *, where: str) -> None:
        seen: set[str] = set()
        unknown: list[str] = []
        for name in names:
            if name in seen:
                raise InvalidInput(f"{where}: column {name!r} appears twice")
            seen.add(name)
            if name not in self._index:
                unknown.append(name)
        if unknown:
            label = "column" if self.format == "csv" else "field"
            plural = "s" if len(unknown) > 1 else ""
            raise InvalidInput(
                f"{where}: unknown {label}{plural} "
                + ", ".join(repr(n) for n in unknown)
                + f" ({self.layout.name}: nothing was imported)",
                hint=f"{label}s of {self.layout.name}: " + ", ".join(self.layout.columns),
            )

    def _unreadable(self, exc: Exception) -> InvalidInput:
        return InvalidInput(
            f"cannot read {self.path}: {exc}",
            hint="save the file as UTF-8 text (CSV with a header row, or JSON Lines)",
        )

    def rows(self) -> Iterator[SourceRow]:
        try:
            if self.format == "csv":
                yield from self._csv_rows()
            else:
                yield from self._jsonl_rows()
        except (UnicodeDecodeError, csv.Error) as exc:
            raise self._unreadable(exc) from exc

    def _csv_rows(self) -> Iterator[SourceRow]:
        width = len(self.header)
        # The layout's columns from a row padded with one empty field (for the columns
        # the file does not have), picked in C rather than one by one.
        pick = operator.itemgetter(*[j if j >= 0 else width for j in self._order])
        strip = str.strip
        with self._open() as fh:
            header_seen = False
            for start, fields in csv_records(fh, self.delimiter):
                if not header_seen:
                    header_seen = bool("".join(fields).strip())
                    continue
                if len(fields) == width:
                    values = list(map(strip, pick([*fields, ""])))
                    # Every column of the header is one of the layout's: a row whose
                    # values are all empty is a blank line.
                    if any(values):
                        yield SourceRow(start, values, fields, None)
                    continue
                if not "".join(fields).strip():
                    continue
                problem = f"has {len(fields)} fields but the header has {width}"
                padded = [*fields[:width], *[""] * (width - len(fields)), ""]
                yield SourceRow(start, list(map(strip, pick(padded))), fields, problem)

    def _jsonl_rows(self) -> Iterator[SourceRow]:
        index = self._index
        width = len(self.layout.columns)
        with self._open() as fh:
            for number, raw in enumerate(fh, 1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(
                        line,
                        parse_float=str,
                        parse_int=str,
                        parse_constant=_no_constant,
                        object_pairs_hook=_unique_fields,
                    )
                except _DuplicateField as exc:
                    yield SourceRow(number, [""] * width, line, str(exc))
                    continue
                except ValueError as exc:
                    yield SourceRow(number, [""] * width, line, f"not valid JSON: {exc}")
                    continue
                except RecursionError:
                    yield SourceRow(number, [""] * width, line, "not valid JSON: nested too deeply")
                    continue
                if not isinstance(obj, dict):
                    yield SourceRow(number, [""] * width, line, "not a JSON object")
                    continue
                if not all(_is_text(key) for key in obj):
                    yield SourceRow(number, [""] * width, line, "a field name is not text")
                    continue
                if "line" in obj:  # a row of a rejects file: see _read_header
                    obj = rejected_row(obj)
                if self.rename or self.ignore:
                    obj = {
                        name: value
                        for key, value in obj.items()
                        if (name := self._name(key)) is not None
                    }
                if any(key not in index for key in obj):
                    self._check_names(obj, where=f"{self.path}:{number}")
                values = [""] * width
                problem = None
                for key, value in obj.items():
                    if value is None:
                        continue
                    if isinstance(value, str) and not _is_text(value):
                        problem = f"field {key!r} holds a lone surrogate, not text"
                    elif isinstance(value, str):
                        values[index[key]] = value.strip()
                    else:
                        problem = f"field {key!r} must be a string or a number"
                yield SourceRow(number, values, line, problem)

    def check_fields(self) -> None:
        """Refuse unknown JSON Lines fields anywhere in the file before anything is written
        (a CSV file's header was checked on opening)."""
        if self.format == "jsonl":
            for _row in self.rows():
                pass

    def batches(self, size: int) -> Iterator[list[SourceRow]]:
        rows = self.rows()
        while True:
            batch = list(itertools.islice(rows, size))
            if not batch:
                return
            yield batch

    def count_lines(self) -> int:
        count = 0
        with self.path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                count += block.count(b"\n")
        return count
