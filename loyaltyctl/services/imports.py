"""Bulk imports: members from a CRM, purchases, returns and adjustments from tills.

A file is read in batches. For each batch the importer parses every row, looks up what
the rows refer to with a handful of set queries (members, references, open lots,
qualifying activity), applies the rows in file order in memory with the same pure rules
and the same steps as ``services.txns`` / ``services.members`` / ``services.ledger``, and
stores the new rows with bulk inserts (``executemany`` on SQLite, ``COPY`` on
PostgreSQL). The result is the ledger that posting the rows one by one would have made.

The caller owns the transactions: one per batch (a killed import keeps what it
committed, and a re-run sees those rows as duplicates by their references) or one for the
whole file (all or nothing). ``Importer.apply`` works inside whichever it is given.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from json.encoder import encode_basestring_ascii as _json_str
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import TextualSelect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from loyaltyctl.errors import Conflict, InvalidInput, LoyaltyError, NotAllowed, NotFound
from loyaltyctl.rules.earning import Totals, line_factors, points_with, return_share
from loyaltyctl.rules.expiry import lot_expiry
from loyaltyctl.rules.money import from_minor, parse_amount, to_minor
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.tiers import qualified_level, window_bounds
from loyaltyctl.rules.timeutil import (
    LocalTimes,
    local_date,
    local_midnight,
    parse_day,
    parse_when,
)
from loyaltyctl.services.context import ProgramContext, VersionInfo
from loyaltyctl.services.members import signup_ref
from loyaltyctl.store.models import metadata

DEFAULT_BATCH_ROWS = 10_000
SQLITE_CACHE_KIB = 256 * 1024
# Member rows kept between batches of a one-transaction import.
MEMBER_CACHE_LIMIT = 500_000
# Open lots kept on those member rows for later debits.
LOT_CACHE_LIMIT = 250_000
# Qualifying activity kept in memory between batches (member-days); past this the cache is
# dropped and reloaded from the database, so memory stays bounded however large the file.
TRACKER_LIMIT = 2_000_000
# Earning factors kept per (category, tier, day): past this many the cache starts again,
# so a file of free-text categories cannot grow it without bound.
FACTOR_CACHE_LIMIT = 100_000
# First key of PostgreSQL's advisory lock that makes imports of one program take turns.
_IMPORT_LOCK = 0x4C4F5949

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
TXN_COLUMNS = ("type", "member", "ref", "amount", "at", "category", "original", "points", "reason")
FORMATS = ("csv", "jsonl")
TXN_KINDS = ("purchase", "return", "adjust")
OPENING_REASON = "opening balance"

_M_MEMBER, _M_NAME, _M_EMAIL, _M_PHONE, _M_BIRTHDAY, _M_AT, _M_OPENING, _M_EXPIRES = range(8)
_T_TYPE, _T_MEMBER, _T_REF, _T_AMOUNT, _T_AT, _T_CATEGORY, _T_ORIGINAL, _T_POINTS, _T_REASON = (
    range(9)
)
_PURCHASE_TYPES = frozenset(("", "purchase"))
_WHOLE = re.compile(r"^[+-]?\d+$")
_COUNT = re.compile(r"^\d+$")


def opening_ref(code: str) -> str:
    return f"opening:{code}"


# ---------------------------------------------------------------------------------------
# Reading files


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


def csv_records(fh: TextIO) -> Iterator[tuple[int, list[str]]]:
    """``csv.reader``'s records with the line each starts on. A line without quotes, NUL
    or an overlong field is split on commas directly (what the reader would make of it,
    several times faster); any other record is read by ``csv.reader``, whatever lines it
    spans. ``fh`` is opened with ``newline=""``."""
    lines = iter(fh)
    number = 0
    limit = csv.field_size_limit()
    for line in lines:
        number += 1
        if '"' in line or "\x00" in line or len(line) > limit:
            reader = csv.reader(itertools.chain((line,), lines))
            fields = next(reader, [])
            yield number, fields
            number += reader.line_num - 1
            continue
        body = line.rstrip("\r\n")
        yield number, body.split(",") if body else []


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


class ImportFile:
    """A CSV file with a header row, or JSON Lines; columns in any order, unknown ones
    refused for the whole file."""

    def __init__(self, path: Path, layout: Layout, fmt: str | None = None) -> None:
        self.path = path
        self.layout = layout
        self.format = detect_format(path, fmt)
        if not path.is_file():
            raise InvalidInput(f"cannot read {path}: no such file")
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
                header = next((row for row in csv.reader(fh) if "".join(row).strip()), None)
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
        data = [_restored(name) for name in names[self.meta :]]
        self._check_names(data, where=f"{self.path}:1")
        for name in self.layout.required:
            if name not in data:
                raise InvalidInput(
                    f"{self.path}:1: required column {name!r} is missing",
                    hint="columns: " + ", ".join(self.layout.columns),
                )
        self.header = names
        self._order = [data.index(c) + self.meta if c in data else -1 for c in self.layout.columns]

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
            for start, fields in csv_records(fh):
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
                        line, parse_float=str, parse_int=str, parse_constant=_no_constant
                    )
                except ValueError as exc:
                    yield SourceRow(number, [""] * width, line, f"not valid JSON: {exc}")
                    continue
                if not isinstance(obj, dict):
                    yield SourceRow(number, [""] * width, line, "not a JSON object")
                    continue
                if "line" in obj:  # a row of a rejects file: see _read_header
                    obj = _rejected_row(obj)
                if any(key not in index for key in obj):
                    self._check_names(obj, where=f"{self.path}:{number}")
                values = [""] * width
                problem = None
                for key, value in obj.items():
                    if value is None:
                        continue
                    if isinstance(value, str):
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
        try:
            self._fh = path.open(
                "w", encoding="utf-8", newline="" if self.format == "csv" else None
            )
        except OSError as exc:
            raise InvalidInput(f"cannot write the rejects file {path}: {exc.strerror}") from exc
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
            try:
                obj = json.loads(row.original)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                if "line" in obj:
                    obj = _rejected_row(obj)
                out = {"line": row.line, "reason": item.reason}
                out.update({_renamed(k): v for k, v in obj.items()})
            else:
                out = {"line": row.line, "reason": item.reason, "raw": row.original}
            self._fh.write(json.dumps(out, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


REJECT_COLUMNS = ("line", "reason")


def _renamed(name: str) -> str:
    return "adjust_reason" if name == "reason" else name


def _restored(name: str) -> str:
    return "reason" if name == "adjust_reason" else name


def _rejected_row(obj: dict[str, Any]) -> dict[str, Any]:
    """A JSON line of a rejects file as the row it was: without the line and reason it
    was refused with, ``adjust_reason`` back to ``reason``."""
    return {_restored(k): v for k, v in obj.items() if k not in REJECT_COLUMNS}


# ---------------------------------------------------------------------------------------
# Rules of each program version, with the derived values a batch needs per row


class VersionRules:
    def __init__(self, info: VersionInfo) -> None:
        spec = info.spec
        self.id = info.id
        self.spec: Program = spec
        self.tz: ZoneInfo = spec.program.tz
        self.tz_name = spec.program.timezone
        self.digits = spec.program.minor_digits
        self.pending = timedelta(days=spec.earn.pending_days)
        self.allow_negative = spec.earn.allow_negative
        self.bonus_qualifies = spec.earn.bonus_qualifies
        self.signup_bonus = spec.earn.signup_bonus
        levels = spec.tiers.levels
        self.first_tier = levels[0].key
        self.tier_index = {level.key: i for i, level in enumerate(levels)}
        self.top = len(levels) - 1
        self.metric = spec.tiers.metric
        # Thresholds in the unit the ledger stores (minor units for spend): a total below
        # the next level's cannot upgrade, whatever qualified_level would say.
        scale = Decimal(10) ** self.digits if self.metric == "spend" else Decimal(1)
        self.next_min = [levels[i + 1].min * scale for i in range(self.top)]
        self.view = 0
        self.rounding = spec.earn.rounding
        self._expiry: dict[date, date | None] = {}
        self._window: dict[date, tuple[int, int]] = {}
        self._factors: dict[tuple[str | None, str, date], tuple[Decimal, ...] | None] = {}

    def factors(self, category: str | None, tier: str, day: date) -> tuple[Decimal, ...] | None:
        """``line_factors`` of a one-line purchase, worked out once per category, tier
        and day."""
        key = (category, tier, day)
        try:
            return self._factors[key]
        except KeyError:
            if len(self._factors) > FACTOR_CACHE_LIMIT:
                self._factors.clear()
            value = self._factors[key] = line_factors(self.spec, category, tier, day)
            return value

    def expires(self, day: date) -> date | None:
        try:
            return self._expiry[day]
        except KeyError:
            value = self._expiry[day] = lot_expiry(self.spec.expiry, day)
            return value

    def window(self, day: date) -> tuple[int, int]:
        """The qualifying window ending on ``day`` as ordinals [first, end)."""
        try:
            return self._window[day]
        except KeyError:
            start, end = window_bounds(self.spec.tiers, day)
            value = self._window[day] = (start.toordinal(), end.toordinal())
            return value


class RuleBook:
    """Every version of the program, and the (time zone, metric) pairs their tier windows
    are counted in."""

    def __init__(self, ctx: ProgramContext) -> None:
        self.ctx = ctx
        self.versions = [VersionRules(info) for info in ctx.versions]
        self._by_id = {rules.id: rules for rules in self.versions}
        keys: list[tuple[str, str]] = []
        for rules in self.versions:
            key = (rules.tz_name, rules.metric)
            if key not in keys:
                keys.append(key)
            rules.view = keys.index(key)
        self.views = [(ZoneInfo(tz), metric) for tz, metric in keys]
        latest = ctx.spec.program
        # Typed times and amounts are read as the commands read them: in the latest version.
        self.tz = latest.tz
        self.digits = latest.minor_digits

    def at(self, moment: datetime) -> VersionRules:
        if len(self.versions) == 1:
            return self.versions[0]
        return self._by_id[self.ctx.version_at(moment).id]


# ---------------------------------------------------------------------------------------
# Qualifying activity per member, in memory across batches


class Activity:
    """One member's qualifying activity per program-local day (one time zone, one
    metric), complete from day ``start`` on, with the last window summed kept so that a
    window moving forward costs only the days it moves."""

    __slots__ = ("days", "start", "lo", "hi", "total")

    def __init__(self, start: int) -> None:
        self.days: dict[int, int] = {}
        self.start = start
        self.lo = 0
        self.hi = 0
        self.total = 0

    def add(self, day: int, value: int) -> bool:
        if day < self.start:
            return False
        days = self.days
        fresh = day not in days
        days[day] = days.get(day, 0) + value
        if self.lo <= day < self.hi:
            self.total += value
        return fresh

    def window(self, lo: int, hi: int) -> int:
        assert lo >= self.start, "qualifying activity was not loaded for this window"
        if (
            lo >= self.lo
            and hi >= self.hi
            and (lo - self.lo) + (hi - self.hi) <= 64 + len(self.days)
        ):
            get = self.days.get
            total = self.total
            for day in range(self.hi, hi):
                total += get(day, 0)
            for day in range(self.lo, lo):
                total -= get(day, 0)
        else:
            total = sum(v for d, v in self.days.items() if lo <= d < hi)
        self.lo, self.hi, self.total = lo, hi, total
        return total


class Tracker:
    """Qualifying activity of the members whose tier may still go up, loaded from the
    ledger once and kept up to date with the rows the import adds."""

    def __init__(self, views: list[tuple[ZoneInfo, str]]) -> None:
        self.views = views
        self.zones = [tz.key for tz, _ in views]
        # The metric when every version counts the same way in the same zone.
        self.single = views[0][1] if len(views) == 1 else None
        self.members: dict[int, list[Activity]] = {}
        self.size = 0

    def clear(self) -> None:
        self.members.clear()
        self.size = 0

    def drop(self, member_id: int) -> None:
        acts = self.members.pop(member_id, None)
        if acts:
            self.size -= sum(len(a.days) for a in acts)

    def fresh(self, member_id: int) -> None:
        """A member new in this batch: no activity anywhere before."""
        self.members[member_id] = [Activity(0) for _ in self.views]

    def add(
        self,
        member_id: int,
        qual_at: datetime,
        points: int,
        spend: int,
        visits: int,
        local: tuple[str, date] | None = None,
    ) -> None:
        """Count a transaction's qualifying activity; ``local`` is its program-local day
        in one time zone when the caller knows it already."""
        acts = self.members.get(member_id)
        if acts is None:
            return
        if self.single is not None and local is not None and local[0] == self.zones[0]:
            value = (
                points if self.single == "points" else spend if self.single == "spend" else visits
            )
            if value and acts[0].add(local[1].toordinal(), value):
                self.size += 1
            return
        for (tz, metric), name, act in zip(self.views, self.zones, acts, strict=True):
            value = points if metric == "points" else spend if metric == "spend" else visits
            if not value:
                continue
            day = local[1] if local is not None and local[0] == name else local_date(qual_at, tz)
            if act.add(day.toordinal(), value):
                self.size += 1

    def activity(self, member_id: int, view: int, lo: int, hi: int) -> int:
        return self.members[member_id][view].window(lo, hi)

    def load(self, session: Session, needs: dict[int, int]) -> None:
        """Make sure each member's activity is known from day ``needs[id]`` (an ordinal)."""
        missing = {
            member_id: start
            for member_id, start in needs.items()
            if member_id not in self.members
            or any(act.start > start for act in self.members[member_id])
        }
        if not missing:
            return
        for member_id in missing:
            self.drop(member_id)
        first = min(missing.values())
        since = min(local_midnight(date.fromordinal(first), tz) for tz, _ in self.views)
        for member_id in missing:
            self.members[member_id] = [Activity(first) for _ in self.views]
        stmt = _typed(
            "SELECT member_id, qual_at, qual_points, qual_spend_minor, qual_visits FROM txn "
            f"WHERE {_any(session, 'member_id', 'ids')} AND qual_at >= :since",
            "txn",
            "member_id",
            "qual_at",
            "qual_points",
            "qual_spend_minor",
            "qual_visits",
        )
        since_value = since.isoformat(" ", "microseconds")[:26] if _is_sqlite(session) else since
        rows: Any = session.connection().execute(
            stmt, {"ids": _values(session, missing), "since": since_value}
        )
        for member_id, qual_at, points, spend, visits in rows:
            self.add(member_id, qual_at, points, spend, visits)


# ---------------------------------------------------------------------------------------
# Database access: set lookups and the bulk paths of each backend


@dataclass(slots=True, eq=False)
class MemberState:
    """A member row as a batch changes it; ``lots`` only for members a debit may touch."""

    id: int
    code: str
    status: str
    tier: str
    tier_since: date | None
    enrolled_at: datetime
    balance: int
    debt: int
    last_purchase_at: datetime | None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    birthday: date | None = None
    erased: bool = False
    lots: list[OpenLot] | None = None
    # The key of the last lot of the stored ones loaded in order (None: none of them);
    # ``lots_complete`` once every stored lot with points left is loaded.
    horizon: tuple[Any, ...] | None = None
    lots_complete: bool = False
    changed: bool = False
    new: bool = False
    _enrolled_day: date | None = None
    _enrolled_start: datetime | None = None

    def enrolled_day(self, tz: ZoneInfo) -> date:
        if self._enrolled_day is None:
            self._enrolled_day = local_date(self.enrolled_at, tz)
        return self._enrolled_day

    def before_enrolment(self, moment: datetime, tz: ZoneInfo) -> bool:
        """Whether ``moment`` falls on a program-local day before the enrolment day."""
        if self._enrolled_start is None:
            self._enrolled_start = local_midnight(self.enrolled_day(tz), tz)
        return moment < self._enrolled_start


class OpenLot:
    """A lot with points left that a debit of this batch may take from. ``row`` is the
    insert row of a lot made in this batch (its remainder is written on insert).

    ``key`` orders lots as ledger.open_lots does (oldest-expiring first, no expiry last,
    then oldest earned, then id), on the values as stored: SQLite's ISO text sorts as its
    dates and times do, PostgreSQL's are dates and times."""

    __slots__ = ("id", "txn_id", "key", "remaining", "initial", "row")

    def __init__(
        self,
        id: int,
        txn_id: int,
        expires_on: Any,
        earned_at: Any,
        remaining: int,
        row: list[Any] | None = None,
    ) -> None:
        self.id = id
        self.txn_id = txn_id
        self.key = (expires_on is None, "" if expires_on is None else expires_on, earned_at, id)
        self.remaining = remaining
        self.initial = remaining
        self.row = row


# OpenLot.key, read in C when a member's lots are sorted.
_LOT_KEY = operator.attrgetter("key")


class KnownTxn:
    """What a batch needs to know about a stored (or just applied) transaction."""

    __slots__ = (
        "id",
        "kind",
        "member_id",
        "occurred_at",
        "amount_minor",
        "points",
        "qual_points",
        "qual_spend_minor",
        "qual_at",
        "payload_text",
    )

    def __init__(
        self,
        id: int,
        kind: str,
        member_id: int,
        occurred_at: datetime,
        amount_minor: int | None,
        points: int,
        qual_points: int,
        qual_spend_minor: int,
        qual_at: datetime,
        payload_text: str,
    ) -> None:
        self.id = id
        self.kind = kind
        self.member_id = member_id
        self.occurred_at = occurred_at
        self.amount_minor = amount_minor
        self.points = points
        self.qual_points = qual_points
        self.qual_spend_minor = qual_spend_minor
        self.qual_at = qual_at
        self.payload_text = payload_text

    def same_request(self, payload: dict[str, Any], at: datetime | None) -> bool:
        """services.txns._existing: the stored payload but its time equals the request's,
        and the time too when the request states one."""
        stored = json.loads(self.payload_text)
        same = {k: v for k, v in stored.items() if k != "at"} == payload
        return same and (at is None or self.occurred_at == at)


def _is_sqlite(session: Session) -> bool:
    return session.connection().dialect.name == "sqlite"


def _any(session: Session, column: str, param: str) -> str:
    """``column`` is one of the values of parameter ``param`` (see ``_values``): one JSON
    or array parameter however many values, where ``IN (…)`` would bind each."""
    if _is_sqlite(session):
        return f"{column} IN (SELECT value FROM json_each(:{param}))"
    return f"{column} = ANY(:{param})"


def _values(session: Session, values: Iterable[Any]) -> Any:
    items = sorted(set(values))
    return json.dumps(items) if _is_sqlite(session) else items


def _typed(sql: str, table: str, *columns: str) -> TextualSelect:
    """SQL text whose result columns convert like the model's (dates, aware datetimes)."""
    t = metadata.tables[table]
    return text(sql).columns(*(t.c[name] for name in columns))


_MEMBER_FIELDS = (
    "id",
    "code",
    "status",
    "tier",
    "tier_since",
    "enrolled_at",
    "balance",
    "debt",
    "last_purchase_at",
    "name",
    "email",
    "phone",
    "birthday",
    "erased_at",
)


def fetch_members(
    session: Session, program_id: int, codes: Iterable[str]
) -> dict[str, MemberState]:
    """The members of ``codes``, locked on PostgreSQL in code order (every writer locks
    a member before reading its lots; a fixed order keeps two writers of several members
    from deadlocking)."""
    lock = "" if _is_sqlite(session) else " FOR UPDATE"
    stmt = _typed(
        f"SELECT {', '.join(_MEMBER_FIELDS)} FROM member "
        f"WHERE program_id = :p AND {_any(session, 'code', 'codes')} ORDER BY code{lock}",
        "member",
        *_MEMBER_FIELDS,
    )
    rows: Any = session.connection().execute(
        stmt, {"p": program_id, "codes": _values(session, codes)}
    )
    found: dict[str, MemberState] = {}
    for r in rows:
        found[r[1]] = MemberState(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
            r[11],
            r[12],
            r[13] is not None,
        )
    return found


def fetch_later_tiers(
    session: Session, member_ids: Iterable[int], after: date
) -> dict[int, list[tuple[date, str]]]:
    """Each member's tier history steps dated after ``after``, as (date, tier held
    before the step), oldest first: what a row dated before them needs to know the tier
    of its day. Members without such steps are left out."""
    stmt = _typed(
        "SELECT member_id, effective_on, tier FROM (SELECT member_id, effective_on, id, "
        "LAG(tier) OVER (PARTITION BY member_id ORDER BY effective_on, id) AS tier "
        f"FROM tier_change WHERE {_any(session, 'member_id', 'ids')}) c "
        "WHERE effective_on > :after ORDER BY member_id, effective_on, id",
        "tier_change",
        "member_id",
        "effective_on",
        "tier",
    )
    found: dict[int, list[tuple[date, str]]] = {}
    rows: Any = session.connection().execute(
        stmt,
        {
            "ids": _values(session, member_ids),
            "after": after.isoformat() if _is_sqlite(session) else after,
        },
    )
    for member_id, day, before in rows:
        found.setdefault(member_id, []).append((day, before))
    return found


_KNOWN_FIELDS = (
    "ref",
    "id",
    "kind",
    "member_id",
    "occurred_at",
    "amount_minor",
    "points",
    "qual_points",
    "qual_spend_minor",
    "qual_at",
    "payload",
)


def fetch_txns(session: Session, program_id: int, refs: Iterable[str]) -> dict[str, KnownTxn]:
    stmt = _typed(
        f"SELECT {', '.join(_KNOWN_FIELDS)} FROM txn "
        f"WHERE program_id = :p AND {_any(session, 'ref', 'refs')}",
        "txn",
        *_KNOWN_FIELDS,
    )
    rows: Any = session.connection().execute(
        stmt, {"p": program_id, "refs": _values(session, refs)}
    )
    return {row[0]: KnownTxn(*row[1:]) for row in rows}


def fetch_returned(session: Session, original_ids: Iterable[int]) -> dict[int, Totals]:
    """Per purchase: amount, points, qualifying points and spend of its returns so far."""
    rows: Any = session.connection().execute(
        text(
            "SELECT original_id, COALESCE(SUM(amount_minor), 0), COALESCE(SUM(points), 0), "
            "COALESCE(SUM(qual_points), 0), COALESCE(SUM(qual_spend_minor), 0) FROM txn "
            f"WHERE {_any(session, 'original_id', 'ids')} AND kind = 'return' "
            "GROUP BY original_id"
        ),
        {"ids": _values(session, original_ids)},
    )
    return {row[0]: Totals(*(int(v) for v in row[1:])) for row in rows}


_LOT_ORDER = "expires_on IS NULL, expires_on, earned_at, id"
_LOT_COLUMNS = "member_id, id, txn_id, expires_on, earned_at, remaining"


def fetch_open_lots(
    session: Session, needs: dict[MemberState, int], own_txn_ids: Iterable[int]
) -> None:
    """Attach to each member (``member.lots``) its lots with points left, in the order
    debits take them, as far as covers ``needs[member]`` points, plus the lots of
    ``own_txn_ids`` (purchases being returned). A debit that needs more loads the rest
    (``load_all_lots``): a frequent customer may hold hundreds of lots."""
    by_id = {m.id: m for m in needs}
    for m in needs:
        m.lots = []
        m.horizon = None
        m.lots_complete = False
    if not by_id:
        return
    most = max(needs.values())
    stmt = text(
        f"""SELECT {_LOT_COLUMNS}, before, total FROM (
              SELECT {_LOT_COLUMNS},
                     SUM(remaining) OVER (PARTITION BY member_id ORDER BY {_LOT_ORDER}
                                          ROWS UNBOUNDED PRECEDING) - remaining AS before,
                     COUNT(*) OVER (PARTITION BY member_id) AS total
              FROM points_lot WHERE {_any(session, "member_id", "ids")} AND remaining > 0
            ) AS open_lot
            WHERE before < :most OR {_any(session, "txn_id", "own")}"""
    )
    params = {"ids": _values(session, by_id), "most": most, "own": _values(session, own_txn_ids)}
    rows: Any = session.connection().execute(stmt, params)
    loaded: dict[int, int] = {}
    totals: dict[int, int] = {}
    for member_id, lot_id, txn_id, expires, earned, remaining, before, total in rows:
        m = by_id[member_id]
        assert m.lots is not None
        lot = OpenLot(lot_id, txn_id, expires, earned, remaining)
        m.lots.append(lot)
        totals[member_id] = total
        if before < most:
            loaded[member_id] = loaded.get(member_id, 0) + 1
            if m.horizon is None or lot.key > m.horizon:
                m.horizon = lot.key
    for member_id, m in by_id.items():
        if member_id in totals:
            m.lots_complete = loaded.get(member_id, 0) == totals[member_id]
        else:  # nothing came back: with most > 0 that means no open lots at all
            m.lots_complete = most > 0


def add_lots_of_txns(
    session: Session, members: dict[int, MemberState], txn_ids: Iterable[int]
) -> None:
    """Add to the lots already loaded for ``members`` the open lots the transactions
    ``txn_ids`` made (purchases being returned), where missing."""
    rows = session.connection().execute(
        text(
            f"SELECT {_LOT_COLUMNS} FROM points_lot "
            f"WHERE {_any(session, 'txn_id', 'own')} AND remaining > 0"
        ),
        {"own": _values(session, txn_ids)},
    )
    _append_missing_lots(members, rows)


def load_all_lots(session: Session, m: MemberState) -> None:
    """Every stored lot of ``m`` with points left, keeping those already in memory (a
    debit of this batch may have taken from them)."""
    assert m.lots is not None
    rows = session.connection().execute(
        text(f"SELECT {_LOT_COLUMNS} FROM points_lot WHERE member_id = :m AND remaining > 0"),
        {"m": m.id},
    )
    _append_missing_lots({m.id: m}, rows)
    m.lots_complete = True


def _append_missing_lots(members: dict[int, MemberState], rows: Iterable[Any]) -> None:
    """Add lot rows (``_LOT_COLUMNS``) to the loaded lots of their members, except those
    already loaded: the ones in memory may have been debited since."""
    have: dict[int, set[int]] = {}
    for member_id, lot_id, txn_id, expires, earned, remaining in rows:
        m = members.get(member_id)
        if m is None or m.lots is None:
            continue
        if member_id not in have:
            have[member_id] = {lot.id for lot in m.lots}
        if lot_id not in have[member_id]:
            m.lots.append(OpenLot(lot_id, txn_id, expires, earned, remaining))


TXN_INSERT = (
    "id",
    "program_id",
    "member_id",
    "ref",
    "kind",
    "occurred_at",
    "recorded_at",
    "amount_minor",
    "payload",
    "points",
    "balance_after",
    "tier_after",
    "original_id",
    "reason",
    "qual_points",
    "qual_spend_minor",
    "qual_visits",
    "qual_at",
    "program_version_id",
)
LOT_INSERT = (
    "id",
    "member_id",
    "txn_id",
    "kind",
    "earned_at",
    "available_at",
    "expires_on",
    "points",
    "remaining",
)
_LOT_REMAINING = LOT_INSERT.index("remaining")
ENTRY_INSERT = (
    "member_id",
    "txn_id",
    "lot_id",
    "kind",
    "points",
    "at",
    "recorded_at",
    "program_version_id",
)
TIER_CHANGE_INSERT = ("member_id", "tier", "effective_on", "reason", "recorded_at", "txn_id")
MEMBER_INSERT = (
    "id",
    "program_id",
    "code",
    "name",
    "email",
    "phone",
    "birthday",
    "status",
    "tier",
    "tier_since",
    "enrolled_at",
    "balance",
    "debt",
    "last_purchase_at",
    "updated_at",
)


class Bulk:
    """The fast paths of each database on the session's own connection (so inside its
    transaction): ``executemany`` on SQLite, ``COPY`` on PostgreSQL; values in the form
    SQLAlchemy itself would store them."""

    def __init__(self, session: Session) -> None:
        connection = session.connection()
        self.session = session
        self.sqlite = connection.dialect.name == "sqlite"
        raw: Any = connection.connection.dbapi_connection
        self.raw = raw
        self.dbapi: Any = connection.dialect.dbapi
        if self.sqlite:
            # Index pages of a large import stay in memory instead of being read back
            # from the file for every row (connection-local; SQLite's default is 2 MiB).
            self.raw.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")

    def ts(self, moment: datetime) -> Any:
        # SQLAlchemy's SQLite DateTime: naive UTC with microseconds; ours are UTC already.
        return moment.isoformat(" ", "microseconds")[:26] if self.sqlite else moment

    def ts_iso(self, moment: datetime) -> tuple[Any, str]:
        """``ts(moment)`` and ``moment.isoformat()`` (for payloads) from one formatting."""
        iso = moment.isoformat()
        if not self.sqlite:
            return moment, iso
        # "2026-01-06T15:00:00[.ffffff]+00:00"
        if len(iso) == 25:
            return iso[:10] + " " + iso[11:19] + ".000000", iso
        return iso[:10] + " " + iso[11:26], iso

    def day(self, value: date | None) -> Any:
        if value is None or not self.sqlite:
            return value
        return value.isoformat()

    def lock_imports(self, program_id: int) -> None:
        """Imports of one program take turns on PostgreSQL (SQLite's BEGIN IMMEDIATE
        already lets one writer in at a time)."""
        if not self.sqlite:
            self.session.execute(
                text("SELECT pg_advisory_xact_lock(:k, :p)"), {"k": _IMPORT_LOCK, "p": program_id}
            )

    def max_id(self, table: str) -> int:
        return int(
            self.session.execute(text(f"SELECT COALESCE(MAX(id), 0) FROM {table}")).scalar_one()
        )

    def watermark(self, table: str) -> int:
        """The last id handed out: MAX(id) on SQLite (ids are taken at insert, under the
        write lock), the sequence's last value on PostgreSQL (taken by anyone, committed
        or not)."""
        if self.sqlite:
            return self.max_id(table)
        seq = self.session.execute(
            text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}
        ).scalar_one()
        value = self.session.execute(
            text(f"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {seq}")
        ).scalar_one()
        return int(value)

    def sequence_ids(self, table: str, count: int) -> list[int]:
        if count <= 0:
            return []
        values = self.session.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table, "n": count},
        ).scalars()
        return [int(v) for v in values]

    def ids(self, table: str, count: int) -> Iterator[int]:
        """New primary keys: after MAX(id) inside SQLite's write transaction (nobody else
        can insert meanwhile), ``count`` at most from the table's sequence on PostgreSQL."""
        if self.sqlite:
            return itertools.count(self.max_id(table) + 1)
        return iter(self.sequence_ids(table, count))

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        names = ", ".join(columns)
        if self.sqlite:
            marks = ", ".join("?" * len(columns))
            self._run(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
            return
        sql = f"COPY {table} ({names}) FROM STDIN"
        try:
            with self.raw.cursor() as cur, cur.copy(sql) as copy:
                for row in rows:
                    copy.write_row(row)
        except self.dbapi.IntegrityError as exc:
            raise IntegrityError(sql, None, exc) from exc

    def update(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """``UPDATE table SET columns… WHERE id = …``: each row is the values, then the id."""
        if not rows:
            return
        mark = "?" if self.sqlite else "%s"
        sets = ", ".join(f"{name} = {mark}" for name in columns)
        self._run(f"UPDATE {table} SET {sets} WHERE id = {mark}", rows)

    def _run(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        # A unique key lost to a concurrent writer surfaces as SQLAlchemy's IntegrityError,
        # which the CLI answers by running the (idempotent) command once more.
        try:
            with contextlib.closing(self.raw.cursor()) as cur:
                cur.executemany(sql, rows)
        except self.dbapi.IntegrityError as exc:
            raise IntegrityError(sql, None, exc) from exc


# ---------------------------------------------------------------------------------------
# The batch: rows applied in memory, then written at once


@dataclass
class BatchResult:
    rows: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    last_line: int = 0


@dataclass
class ImportSummary:
    file: str
    rows: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    rejects_file: str | None = None
    first_rejected: list[Rejected] = field(default_factory=list)

    def add(self, result: BatchResult) -> None:
        self.rows += result.rows
        self.applied += result.applied
        self.duplicates += result.duplicates
        self.rejected += len(result.rejected)
        room = 5 - len(self.first_rejected)
        if room > 0:
            self.first_rejected.extend(result.rejected[:room])


class _Batch:
    """The rows one batch adds, built with the steps of services.ledger: ``credit``
    settles a debt first and puts the rest in a new lot, ``debit`` takes lots in the order
    given and leaves what they cannot cover as a debt."""

    def __init__(self, bulk: Bulk, program_id: int, now: datetime) -> None:
        self.bulk = bulk
        self.program_id = program_id
        self.now_s = bulk.ts(now)
        self.txns: list[tuple[Any, ...]] = []
        self.lots: list[list[Any]] = []
        self.entries: list[tuple[Any, ...]] = []
        self.txn_ids: Iterator[int] = iter(())
        self.lot_ids: Iterator[int] = iter(())
        self.last_txn_id: int | None = None
        # Lots this batch made that members' lot lists hold, and stored lots it took from.
        self.open_lots: list[OpenLot] = []
        self.debited: dict[int, OpenLot] = {}
        self.debtors: dict[int, MemberState] = {}
        self.tier_changes: list[tuple[Any, ...]] = []

    def next_txn_id(self) -> int:
        self.last_txn_id = next(self.txn_ids)
        return self.last_txn_id

    def entry(
        self,
        m: MemberState,
        txn_id: int,
        lot_id: int | None,
        kind: str,
        points: int,
        at_s: Any,
        version_id: int,
    ) -> None:
        self.entries.append((m.id, txn_id, lot_id, kind, points, at_s, self.now_s, version_id))
        m.balance += points
        if lot_id is None:
            m.debt -= points
        m.changed = True

    def credit(
        self,
        m: MemberState,
        txn_id: int,
        version_id: int,
        kind: str,
        lot_kind: str,
        points: int,
        at_s: Any,
        available_s: Any,
        expires: date | None,
    ) -> None:
        """Arguments by position: this runs for nearly every row."""
        settle = min(m.debt, points)
        if settle:
            self.entry(m, txn_id, None, kind, settle, at_s, version_id)
        rest = points - settle
        if not rest:
            return
        lot_id = next(self.lot_ids)
        expires_s = self.bulk.day(expires)
        row = [lot_id, m.id, txn_id, lot_kind, at_s, available_s, expires_s, rest, rest]
        self.lots.append(row)
        self.entry(m, txn_id, lot_id, kind, rest, at_s, version_id)
        if m.lots is not None:
            lot = OpenLot(lot_id, txn_id, expires_s, at_s, rest, row)
            m.lots.append(lot)
            self.open_lots.append(lot)

    @staticmethod
    def plan_debit(lots: Iterable[OpenLot], points: int) -> tuple[list[tuple[OpenLot, int]], int]:
        plan: list[tuple[OpenLot, int]] = []
        needed = points
        for lot in lots:
            if needed == 0:
                break
            take = min(lot.remaining, needed)
            if take > 0:
                plan.append((lot, take))
                needed -= take
        return plan, needed

    def debit(
        self,
        m: MemberState,
        txn_id: int,
        version_id: int,
        *,
        kind: str,
        plan: list[tuple[OpenLot, int]],
        short: int,
        at_s: Any,
    ) -> None:
        self.debtors[m.id] = m
        for lot, take in plan:
            lot.remaining -= take
            if lot.row is not None:
                lot.row[_LOT_REMAINING] = lot.remaining
            else:
                self.debited[lot.id] = lot
            self.entry(m, txn_id, lot.id, kind, -take, at_s, version_id)
        if short:
            self.entry(m, txn_id, None, kind, -short, at_s, version_id)

    def write(self, members: Iterable[MemberState]) -> None:
        """Store the batch: new members, transactions, lots, entries, then the caches."""
        bulk = self.bulk
        new_members: list[tuple[Any, ...]] = []
        member_updates: list[tuple[Any, ...]] = []
        lot_updates = [
            (lot.remaining, lot.id) for lot in self.debited.values() if lot.remaining != lot.initial
        ]
        for m in members:
            last = bulk.ts(m.last_purchase_at) if m.last_purchase_at else None
            if m.new:
                new_members.append(
                    (
                        m.id,
                        self.program_id,
                        m.code,
                        m.name,
                        m.email,
                        m.phone,
                        bulk.day(m.birthday),
                        "active",
                        m.tier,
                        bulk.day(m.tier_since),
                        bulk.ts(m.enrolled_at),
                        m.balance,
                        m.debt,
                        last,
                        self.now_s,
                    )
                )
            elif m.changed:
                member_updates.append(
                    (m.balance, m.debt, m.tier, bulk.day(m.tier_since), last, m.id)
                )
        bulk.insert("member", MEMBER_INSERT, new_members)
        bulk.insert("txn", TXN_INSERT, self.txns)
        bulk.insert("tier_change", TIER_CHANGE_INSERT, self.tier_changes)
        bulk.insert("points_lot", LOT_INSERT, self.lots)
        bulk.insert("points_entry", ENTRY_INSERT, self.entries)
        bulk.update("points_lot", ("remaining",), lot_updates)
        bulk.update(
            "member", ("balance", "debt", "tier", "tier_since", "last_purchase_at"), member_updates
        )


class Importer:
    """State that outlives one batch: the program's rules and the qualifying activity of
    members already seen."""

    layout: Layout

    def __init__(self, ctx: ProgramContext, *, now: datetime, keeps_locks: bool) -> None:
        """``keeps_locks``: every batch runs in one transaction, so the members locked in
        an earlier batch cannot have changed since."""
        self.ctx = ctx
        self.now = now
        self.book = RuleBook(ctx)
        self.tracker = Tracker(self.book.views)
        self.keeps_locks = keeps_locks
        self._mark: int | None = None
        self.members: dict[str, MemberState] = {}
        self.touched: dict[str, MemberState] = {}
        # Members whose open lots are kept between batches of one transaction.
        self._kept: dict[int, MemberState] = {}
        self.known: dict[str, KnownTxn] = {}
        # Transactions this batch stored: their insert row, time and qualifying time.
        self.applied: dict[str, tuple[tuple[Any, ...], datetime, datetime]] = {}
        self.batch: _Batch
        # Tier history steps dated after the batch's first day (see fetch_later_tiers).
        self.later_tiers: dict[int, list[tuple[date, str]]] = {}

    def apply(self, session: Session, rows: list[SourceRow]) -> BatchResult:
        raise NotImplementedError

    def _start(self, session: Session) -> Bulk:
        bulk = Bulk(session)
        bulk.lock_imports(self.ctx.id)
        return bulk

    def _new_batch(self, bulk: Bulk, txns: int, lots: int) -> _Batch:
        """Reserve ids for at most ``txns`` transactions and ``lots`` lots.

        Called once this batch's members are locked. Between batches committed one by one,
        another writer may have added transactions, and then the qualifying activity the
        tracker remembers may be stale: it is dropped when anyone but this import took a
        transaction id since the last batch (every writer locks the member first, so by now
        a writer of one of these members has committed)."""
        batch = _Batch(bulk, self.ctx.id, self.now)
        mark = bulk.watermark("txn")
        stale = self._mark is not None and mark != self._mark
        if bulk.sqlite:
            batch.txn_ids = itertools.count(mark + 1)
            self._mark = mark
        else:
            ids = bulk.sequence_ids("txn", txns)
            stale = stale or (bool(ids) and (ids[0], ids[-1]) != (mark + 1, mark + len(ids)))
            batch.txn_ids = iter(ids)
            self._mark = ids[-1] if ids else mark
        if stale and not self.keeps_locks:
            self.tracker.clear()
        batch.lot_ids = bulk.ids("points_lot", lots)
        return batch

    def _fetch_members(self, session: Session, codes: set[str]) -> None:
        """The batch's members (``touched``). In one transaction the rows read in an
        earlier batch are still what the database holds (only this import writes them),
        so they are kept rather than read again."""
        if not self.keeps_locks:
            self.members = fetch_members(session, self.ctx.id, codes)
        else:
            if len(self.members) > MEMBER_CACHE_LIMIT:
                self.members = {}
                self._kept.clear()
            missing = [code for code in codes if code not in self.members]
            if missing:
                self.members.update(fetch_members(session, self.ctx.id, missing))
        self.touched = {code: m for code in codes if (m := self.members.get(code)) is not None}

    def _finish(self, bulk: Bulk, batch: _Batch) -> None:
        batch.write(self.touched.values())
        for m in self.touched.values():
            m.changed = m.new = False
        self._keep_lots(batch)
        if bulk.sqlite and batch.last_txn_id is not None:
            self._mark = batch.last_txn_id
        if self.tracker.size > TRACKER_LIMIT:
            self.tracker.clear()

    def _keep_lots(self, batch: _Batch) -> None:
        """After a batch is written: in one transaction the lots loaded on member rows stay
        what the database holds (this import adds each new lot of those members to them),
        so later batches take from them instead of reading them again. Between
        transactions another writer may have changed them: they are read again."""
        if not self.keeps_locks:
            for m in self.touched.values():
                m.lots = None
            return
        for lot in itertools.chain(batch.open_lots, batch.debited.values()):
            lot.row = None  # stored now, with this remainder
            lot.initial = lot.remaining
        for m in batch.debtors.values():
            if m.lots is not None:
                m.lots = [lot for lot in m.lots if lot.remaining > 0]
        for m in self.touched.values():
            if m.lots is not None:
                self._kept[m.id] = m
        if sum(len(m.lots or ()) for m in self._kept.values()) > LOT_CACHE_LIMIT:
            for m in self._kept.values():
                m.lots = None
            self._kept.clear()

    def _store(self, txn: tuple[Any, ...], when: datetime, qual_at: datetime) -> None:
        """Queue a transaction row (in TXN_INSERT's order) and remember it by reference
        for the rest of the batch."""
        self.batch.txns.append(txn)
        self.applied[txn[3]] = (txn, when, qual_at)

    def _found(self, ref: str) -> KnownTxn | None:
        """The transaction stored under ``ref``: before this batch or earlier in it."""
        found = self.known.get(ref)
        if found is None and (applied := self.applied.get(ref)) is not None:
            t, when, qual_at = applied
            found = KnownTxn(t[0], t[4], t[2], when, t[7], t[9], t[14], t[15], qual_at, t[8])
        return found

    def _not_found(self, code: str) -> NotFound:
        return NotFound(
            f"member {code} not found in program {self.ctx.key}",
            hint=f"enroll it with: loyaltyctl member enroll {code}",
        )

    def _conflict(self, ref: str, kind: str) -> Conflict:
        return Conflict(
            f"reference {ref} was already used for a different {kind} in program {self.ctx.key}",
            hint="use a new ref for a new transaction; an identical retry is safe",
        )

    def _tier_on(self, m: MemberState, day: date) -> str:
        """The tier ``m`` held on ``day``: the current one unless it changed since."""
        later = self.later_tiers.get(m.id)
        if later:
            for effective, before in later:
                if effective > day:
                    return before
        return m.tier

    def _upgrade(self, m: MemberState, rules: VersionRules, day: date) -> None:
        """services.tiering.upgrade_if_qualified on the tracker's activity."""
        index = rules.tier_index.get(m.tier, 0)
        if index >= rules.top:
            return
        lo, hi = rules.window(day)
        total = self.tracker.activity(m.id, rules.view, lo, hi)
        if total < rules.next_min[index]:
            return
        activity = from_minor(total, rules.digits) if rules.metric == "spend" else Decimal(total)
        target = qualified_level(rules.spec, activity)
        if rules.tier_index[target] > index:
            # Dated by the row's day, never before a step already recorded.
            later = self.later_tiers.setdefault(m.id, [])
            effective = max(day, later[-1][0]) if later else day
            later.append((effective, m.tier))
            batch = self.batch
            batch.tier_changes.append(
                (m.id, target, batch.bulk.day(effective), "upgrade", batch.now_s, batch.last_txn_id)
            )
            m.tier = target
            m.tier_since = effective
            m.changed = True
            if rules.tier_index[target] == rules.top and len(self.book.versions) == 1:
                self.tracker.drop(m.id)  # nowhere higher to go


def _text(value: str, what: str, limit: int | None = None) -> str:
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    if limit is not None and len(value) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters")
    return value


def _canonical(payload: dict[str, Any]) -> str:
    # services.txns._canonical
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def purchase_payload_text(at_iso: str, member: str, category: str | None, amount: str) -> str:
    """``_canonical`` of a one-line purchase's payload, written out directly (it is the
    costliest part of a purchase row otherwise)."""
    cat = "null" if category is None else _json_str(category)
    return (
        '{"at":'
        + _json_str(at_iso)
        + ',"kind":"purchase","lines":[['
        + cat
        + ","
        + _json_str(amount)
        + ']],"member":'
        + _json_str(member)
        + "}"
    )


# ---------------------------------------------------------------------------------------
# txn import


class TxnRow:
    __slots__ = (
        "src",
        "kind",
        "member",
        "ref",
        "at",
        "when",
        "rules",
        "day",
        "amount",
        "category",
        "original",
        "points",
        "reason",
    )

    def __init__(
        self,
        src: SourceRow,
        kind: str,
        member: str,
        ref: str,
        at: datetime | None,
        when: datetime,
        rules: VersionRules,
        day: date,
    ) -> None:
        self.src = src
        self.kind = kind
        self.member = member
        self.ref = ref
        self.at = at
        self.when = when
        self.rules = rules
        self.day = day
        self.amount = Decimal(0)
        self.category: str | None = None
        self.original = ""
        self.points = 0
        self.reason = ""

    def payload(self) -> dict[str, Any]:
        """The request as services.txns stores it (without its time)."""
        if self.kind == "purchase":
            return {
                "kind": "purchase",
                "member": self.member,
                "lines": [[self.category, str(self.amount)]],
            }
        if self.kind == "return":
            return {
                "kind": "return",
                "member": self.member,
                "original": self.original,
                "amount": str(self.amount),
            }
        return {
            "kind": "adjust",
            "member": self.member,
            "points": self.points,
            "reason": self.reason,
        }


_NOT_FOR = {
    "purchase": (_T_ORIGINAL, _T_POINTS, _T_REASON),
    "return": (_T_CATEGORY, _T_POINTS, _T_REASON),
    "adjust": (_T_AMOUNT, _T_CATEGORY, _T_ORIGINAL),
}


class TxnImporter(Importer):
    """Purchases, returns and adjustments, as ``txn post|return|adjust`` would post them."""

    layout = TXN_LAYOUT

    def __init__(self, ctx: ProgramContext, *, now: datetime, keeps_locks: bool) -> None:
        super().__init__(ctx, now=now, keeps_locks=keeps_locks)
        digits = self.book.digits
        # An amount parse_amount accepts as it is: digits, and at most the currency's
        # decimals (anything else goes the long way, to its error message).
        self._plain_amount = re.compile(
            rf"\d+(?:\.\d{{1,{digits}}})?" if digits else r"\d+"
        ).fullmatch
        self._single = self.book.versions[0] if len(self.book.versions) == 1 else None
        self._clock = LocalTimes(self.book.tz)

    def parse(self, src: SourceRow) -> TxnRow:
        v = src.values
        if src.problem is None and v[_T_TYPE] in _PURCHASE_TYPES and self._single is not None:
            row = self._parse_plain_purchase(src, v, self._single)
            if row is not None:
                return row
        return self._parse_row(src)

    def _parse_plain_purchase(
        self, src: SourceRow, v: list[str], rules: VersionRules
    ) -> TxnRow | None:
        """The common row, a purchase with a local time, in a program with one version:
        the checks and the result of ``_parse_row``, with less work per row. None for
        anything else, which ``_parse_row`` then parses (or refuses with its message)."""
        member, ref, amount, at = v[_T_MEMBER], v[_T_REF], v[_T_AMOUNT], v[_T_AT]
        if (
            not member
            or not ref
            or len(member) > 128
            or len(ref) > 200
            or v[_T_ORIGINAL]
            or v[_T_POINTS]
            or v[_T_REASON]
            or not self._plain_amount(amount)
            or "\x00" in member
            or "\x00" in ref
        ):
            return None
        category = v[_T_CATEGORY] or None
        if category is not None and "\x00" in category:
            return None
        parsed = self._clock.parse(at)
        if parsed is None:
            return None
        when, day = parsed
        row = TxnRow(src, "purchase", member, ref, when, when, rules, day)
        row.amount = Decimal(amount)
        row.category = category
        return row

    def _parse_row(self, src: SourceRow) -> TxnRow:
        if src.problem:
            raise InvalidInput(src.problem)
        v = src.values
        kind = v[_T_TYPE].lower() or "purchase"
        if kind not in TXN_KINDS:
            raise InvalidInput(
                f"type {v[_T_TYPE]!r} is not purchase, return or adjust",
                hint="leave it empty for a purchase",
            )
        member = _text(v[_T_MEMBER], "member", 128)
        if not member:
            raise InvalidInput("member is empty", hint="give the member's id, e.g. M-1001")
        ref = _text(v[_T_REF], "ref", 200)
        if not ref:
            raise InvalidInput("ref is empty", hint="give your system's reference, e.g. T-1001")
        for index in _NOT_FOR[kind]:
            if v[index]:
                raise InvalidInput(
                    f"{TXN_COLUMNS[index]} does not go with type {kind}",
                    hint="leave it empty, or check the type column",
                )
        at = parse_when(v[_T_AT], self.book.tz, what="at") if v[_T_AT] else None
        when = at or self.now
        rules = self.book.at(when)
        row = TxnRow(src, kind, member, ref, at, when, rules, local_date(when, rules.tz))
        if kind == "adjust":
            raw = v[_T_POINTS]
            if not _WHOLE.match(raw):
                raise InvalidInput(
                    f"points {raw!r} is not a whole number"
                    if raw
                    else "an adjustment needs points",
                    hint="signed points, e.g. 500 or -200",
                )
            row.points = int(raw)
            if row.points == 0:
                raise InvalidInput(
                    "points must not be 0", hint="give a positive or negative number"
                )
            row.reason = _text(v[_T_REASON], "reason")
            if not row.reason:
                raise InvalidInput("an adjustment needs a reason", hint="say why, e.g. 'goodwill'")
            return row
        if not v[_T_AMOUNT]:
            raise InvalidInput(f"a {kind} needs an amount", hint="e.g. 12.50")
        row.amount = parse_amount(v[_T_AMOUNT], self.book.digits, what="amount")
        if kind == "purchase":
            row.category = _text(v[_T_CATEGORY], "category") or None
        else:
            row.original = _text(v[_T_ORIGINAL], "original", 200)
            if not row.original:
                raise InvalidInput("a return needs original (the purchase's ref)")
        return row

    def apply(self, session: Session, rows: list[SourceRow]) -> BatchResult:
        result = BatchResult(rows=len(rows), last_line=rows[-1].line if rows else 0)
        parsed: list[TxnRow] = []
        for src in rows:
            try:
                parsed.append(self.parse(src))
            except LoyaltyError as exc:
                result.rejected.append(Rejected(src, reason_of(exc)))
        bulk = self._start(session)
        self._fetch_members(session, {r.member for r in parsed})
        refs = {r.ref for r in parsed} | {r.original for r in parsed if r.kind == "return"}
        self.known = fetch_txns(session, self.ctx.id, refs)
        self.applied = {}
        fresh = sum(1 for r in parsed if r.ref not in self.known)
        self.batch = batch = self._new_batch(bulk, fresh, fresh)
        self.returned = fetch_returned(
            session,
            (
                found.id
                for r in parsed
                if r.kind == "return" and (found := self.known.get(r.original)) is not None
            ),
        )
        self.session = session
        self.later_tiers = (
            fetch_later_tiers(session, [m.id for m in self.touched.values()], min(days))
            if (days := [r.day for r in parsed])
            else {}
        )
        self._load_lots(parsed)
        self.tracker.load(session, self._activity_needs(parsed))
        apply_row = {"purchase": self._purchase, "return": self._return, "adjust": self._adjust}
        for row in parsed:
            try:
                if apply_row[row.kind](row):
                    result.applied += 1
                else:
                    result.duplicates += 1
            except LoyaltyError as exc:
                result.rejected.append(Rejected(row.src, reason_of(exc)))
        result.rejected.sort(key=lambda item: item.row.line)
        self._finish(bulk, batch)
        return result

    def _load_lots(self, parsed: list[TxnRow]) -> None:
        """Open lots of the members a debit may take from: as many as the batch's
        adjustments take (in order), and the lots of the purchases being returned."""
        needs: dict[MemberState, int] = {}
        own: list[int] = []
        for r in parsed:
            if r.kind == "adjust" and r.points > 0 or r.kind == "purchase":
                continue
            m = self.members.get(r.member)
            if m is None:
                continue
            if r.kind == "adjust":
                needs[m] = needs.get(m, 0) - r.points
            else:
                needs.setdefault(m, 0)
                if (found := self.known.get(r.original)) is not None:
                    own.append(found.id)
        kept = {m.id: m for m in needs if m.lots is not None}
        if kept and own:
            add_lots_of_txns(self.session, kept, own)
        fetch_open_lots(self.session, {m: n for m, n in needs.items() if m.id not in kept}, own)

    def _debit_plan(
        self, m: MemberState, first: list[OpenLot], points: int
    ) -> tuple[list[tuple[OpenLot, int]], int]:
        """services.ledger.debit's plan over ``first`` then the member's other lots in
        order; when it reaches past the lots loaded so far, the rest are loaded first."""
        skip = set(first)
        while True:
            assert m.lots is not None
            # Kept in order: lots come in order or nearly (sorting them again is cheap),
            # and the plan reads only as far as it needs.
            m.lots.sort(key=_LOT_KEY)
            others = (lot for lot in m.lots if lot not in skip)
            plan, short = _Batch.plan_debit(itertools.chain(first, others), points)
            if m.lots_complete:
                return plan, short
            horizon = m.horizon
            if not short and all(
                lot in first or (horizon is not None and lot.key <= horizon) for lot, _ in plan
            ):
                return plan, short
            load_all_lots(self.session, m)

    def _activity_needs(self, parsed: list[TxnRow]) -> dict[int, int]:
        """From which day each member's qualifying activity must be known: members below
        their top tier with a row that may upgrade them."""
        needs: dict[int, int] = {}
        for row in parsed:
            rules = row.rules
            if row.kind == "return" or (
                row.kind == "adjust" and not (row.points > 0 and rules.bonus_qualifies)
            ):
                continue
            m = self.members.get(row.member)
            if m is None or rules.tier_index.get(m.tier, 0) >= rules.top:
                continue
            lo = rules.window(row.day)[0]
            if lo < needs.get(m.id, lo + 1):
                needs[m.id] = lo
        return needs

    def _member(self, row: TxnRow) -> MemberState:
        m = self.members.get(row.member)
        if m is None:
            raise self._not_found(row.member)
        return m

    def _duplicate(self, row: TxnRow) -> bool:
        """True for an identical repeat of a stored transaction; Conflict if it differs."""
        found = self._found(row.ref)
        if found is None:
            return False
        if not found.same_request(row.payload(), row.at):
            raise self._conflict(row.ref, found.kind)
        return True

    def _after_enrolment(self, row: TxnRow, m: MemberState, what: str) -> None:
        tz = self.book.tz
        if m.before_enrolment(row.when, tz):
            raise InvalidInput(
                f"{what} dated {local_date(row.when, tz)} is before member {m.code} enrolled "
                f"({m.enrolled_day(tz)})",
                hint="check at, or enroll the member with an earlier date",
            )

    def _purchase(self, row: TxnRow) -> bool:
        m = self.members.get(row.member)
        if m is None:
            raise self._not_found(row.member)
        if (row.ref in self.known or row.ref in self.applied) and self._duplicate(row):
            return False
        if m.status != "active":
            raise NotAllowed(
                f"member {m.code} is {m.status} and cannot earn points",
                hint=f"reactivate it first with: loyaltyctl member reactivate {m.code}"
                if m.status == "suspended"
                else None,
            )
        self._after_enrolment(row, m, "a purchase")
        rules = row.rules
        factors = rules.factors(row.category, self._tier_on(m, row.day), row.day)
        amount_minor = to_minor(row.amount, self.book.digits)
        if factors is None:
            points = spend = 0
        else:
            points = points_with(row.amount, factors, rules.rounding)
            spend = amount_minor
        batch = self.batch
        txn_id = batch.next_txn_id()
        when = row.when
        at_s, at_iso = batch.bulk.ts_iso(when)
        if points > 0:
            available_s = at_s if not rules.pending else batch.bulk.ts(when + rules.pending)
            batch.credit(
                m,
                txn_id,
                rules.id,
                "earn",
                "earn",
                points,
                at_s,
                available_s,
                rules.expires(row.day),
            )
        if m.last_purchase_at is None or m.last_purchase_at < when:
            m.last_purchase_at = when
            m.changed = True
        if m.id in self.tracker.members:
            self.tracker.add(m.id, when, points, spend, 1, (rules.tz_name, row.day))
            self._upgrade(m, rules, row.day)
        payload = purchase_payload_text(at_iso, m.code, row.category, str(row.amount))
        self._store(
            (
                txn_id,
                self.ctx.id,
                m.id,
                row.ref,
                "purchase",
                at_s,
                batch.now_s,
                amount_minor,
                payload,
                points,
                m.balance,
                m.tier,
                None,
                None,
                points,
                spend,
                1,
                at_s,
                rules.id,
            ),
            when,
            when,
        )
        return True

    def _return(self, row: TxnRow) -> bool:
        m = self._member(row)
        if self._duplicate(row):
            return False
        amount = row.amount
        if amount <= 0:
            raise InvalidInput(f"return amount {amount} must be greater than zero")
        original = self._found(row.original)
        if original is None or original.kind != "purchase" or original.member_id != m.id:
            raise NotFound(
                f"purchase {row.original} of member {m.code} not found in program {self.ctx.key}",
                hint=f"see the member's transactions with: loyaltyctl txn list {m.code}",
            )
        when = row.when
        if when < original.occurred_at:
            raise InvalidInput(
                f"the return is dated before purchase {row.original} "
                f"({original.occurred_at.isoformat()})",
                hint="check at",
            )
        digits = self.book.digits
        before = self.returned.get(original.id, Totals())
        assert original.amount_minor is not None
        share = return_share(
            Totals(
                original.amount_minor,
                original.points,
                original.qual_points,
                original.qual_spend_minor,
            ),
            before,
            amount,
            digits,
            ref=row.original,
            hint="check amount",
        )
        claw = share.clawback
        rules = row.rules
        plan: list[tuple[OpenLot, int]] = []
        short = 0
        if claw > 0:
            assert m.lots is not None
            own = [lot for lot in m.lots if lot.txn_id == original.id and lot.remaining > 0]
            plan, short = self._debit_plan(m, own, claw)
            if short and not rules.allow_negative:
                raise NotAllowed(
                    f"return would take {claw} points but member {m.code} has only "
                    f"{m.balance}: the program forbids negative balances",
                    hint="the program forbids negative balances (earn.allow_negative = false)",
                )
        batch = self.batch
        txn_id = batch.next_txn_id()
        at_s = batch.bulk.ts(when)
        if claw > 0:
            batch.debit(m, txn_id, rules.id, kind="clawback", plan=plan, short=short, at_s=at_s)
        # A later return of the same purchase in this batch counts this one as done.
        self.returned[original.id] = share.after(before)
        amount_minor = share.amount_minor
        qual_p, qual_s, visits = share.qual_points, share.qual_spend_minor, share.qual_visits
        self.tracker.add(m.id, original.qual_at, qual_p, qual_s, visits)
        payload = _canonical({**row.payload(), "at": when.isoformat()})
        self._store(
            (
                txn_id,
                self.ctx.id,
                m.id,
                row.ref,
                "return",
                at_s,
                batch.now_s,
                amount_minor,
                payload,
                -claw,
                m.balance,
                m.tier,
                original.id,
                None,
                qual_p,
                qual_s,
                visits,
                batch.bulk.ts(original.qual_at),
                rules.id,
            ),
            when,
            original.qual_at,
        )
        return True

    def _adjust(self, row: TxnRow) -> bool:
        m = self._member(row)
        if self._duplicate(row):
            return False
        self._after_enrolment(row, m, "an adjustment")
        rules = row.rules
        points = row.points
        plan: list[tuple[OpenLot, int]] = []
        short = 0
        if points < 0:
            plan, short = self._debit_plan(m, [], -points)
            if short and not rules.allow_negative:
                raise NotAllowed(
                    f"adjustment of {points} exceeds member {m.code}'s balance of {m.balance}: "
                    "the program forbids negative balances",
                    hint="the program forbids negative balances (earn.allow_negative = false)",
                )
        batch = self.batch
        txn_id = batch.next_txn_id()
        when = row.when
        at_s = batch.bulk.ts(when)
        qual = points if rules.bonus_qualifies else 0
        if points > 0:
            batch.credit(
                m,
                txn_id,
                rules.id,
                "adjust",
                "adjust",
                points,
                at_s,
                at_s,
                rules.expires(row.day),
            )
        else:
            batch.debit(m, txn_id, rules.id, kind="adjust", plan=plan, short=short, at_s=at_s)
        self.tracker.add(m.id, when, qual, 0, 0)
        if points > 0 and rules.bonus_qualifies:
            self._upgrade(m, rules, row.day)
        payload = _canonical({**row.payload(), "at": when.isoformat()})
        self._store(
            (
                txn_id,
                self.ctx.id,
                m.id,
                row.ref,
                "adjust",
                at_s,
                batch.now_s,
                None,
                payload,
                points,
                m.balance,
                m.tier,
                None,
                row.reason,
                qual,
                0,
                0,
                at_s,
                rules.id,
            ),
            when,
            when,
        )
        return True


# ---------------------------------------------------------------------------------------
# member import


class MemberRow:
    __slots__ = ("src", "code", "given", "at", "opening", "expires")

    def __init__(
        self,
        src: SourceRow,
        code: str,
        given: dict[str, Any],
        at: datetime | None,
        opening: int,
        expires: date | None,
    ) -> None:
        self.src = src
        self.code = code
        self.given = given
        self.at = at
        self.opening = opening
        self.expires = expires


class MemberImporter(Importer):
    """Members enrolled as ``member enroll`` would (signup bonus included), with the
    points they bring from another system as an opening credit."""

    layout = MEMBER_LAYOUT

    def parse(self, src: SourceRow) -> MemberRow:
        if src.problem:
            raise InvalidInput(src.problem)
        v = src.values
        code = _text(v[_M_MEMBER], "member", 128)
        if not code:
            raise InvalidInput("member is empty", hint="give the member's id, e.g. M-1001")
        given = {
            "name": _text(v[_M_NAME], "name") or None,
            "email": _text(v[_M_EMAIL], "email") or None,
            "phone": _text(v[_M_PHONE], "phone") or None,
            "birthday": parse_day(v[_M_BIRTHDAY], what="birthday") if v[_M_BIRTHDAY] else None,
        }
        at = parse_when(v[_M_AT], self.book.tz, what="enrolled_at") if v[_M_AT] else None
        opening = 0
        if v[_M_OPENING]:
            if not _COUNT.match(v[_M_OPENING]):
                raise InvalidInput(
                    f"opening_balance {v[_M_OPENING]!r} is not a whole number of points",
                    hint="points carried over, e.g. 1200 (0 or empty for none)",
                )
            opening = int(v[_M_OPENING])
        expires = parse_day(v[_M_EXPIRES], what="opening_expires") if v[_M_EXPIRES] else None
        if expires is not None and not opening:
            raise InvalidInput("opening_expires goes with an opening_balance")
        return MemberRow(src, code, given, at, opening, expires)

    def apply(self, session: Session, rows: list[SourceRow]) -> BatchResult:
        result = BatchResult(rows=len(rows), last_line=rows[-1].line if rows else 0)
        parsed: list[MemberRow] = []
        for src in rows:
            try:
                parsed.append(self.parse(src))
            except LoyaltyError as exc:
                result.rejected.append(Rejected(src, reason_of(exc)))
        bulk = self._start(session)
        codes = {r.code for r in parsed}
        self._fetch_members(session, codes)
        self.known = fetch_txns(
            session, self.ctx.id, [f(code) for code in codes for f in (signup_ref, opening_ref)]
        )
        self.applied = {}
        fresh = sum(1 for code in codes if code not in self.members)
        self.member_ids = bulk.ids("member", fresh)
        self.batch = batch = self._new_batch(bulk, 2 * fresh + len(parsed), 2 * fresh + len(parsed))
        needs: dict[int, int] = {}
        for row in parsed:
            m = self.members.get(row.code)
            if m is not None and row.opening:
                rules = self.book.at(m.enrolled_at)
                if rules.bonus_qualifies and rules.tier_index.get(m.tier, 0) < rules.top:
                    lo = rules.window(local_date(m.enrolled_at, rules.tz))[0]
                    needs[m.id] = min(needs.get(m.id, lo), lo)
        self.tracker.load(session, needs)
        for row in parsed:
            try:
                if self._apply_row(row):
                    result.applied += 1
                else:
                    result.duplicates += 1
            except LoyaltyError as exc:
                result.rejected.append(Rejected(row.src, reason_of(exc)))
        result.rejected.sort(key=lambda item: item.row.line)
        self._finish(bulk, batch)
        return result

    def _apply_row(self, row: MemberRow) -> bool:
        m = self.members.get(row.code)
        if m is None:
            self._check_refs_free(row)
            self._enroll(row)
            return True
        self._repeat(m, row)
        if not row.opening:
            return False
        return self._opening(m, row)

    def _repeat(self, m: MemberState, row: MemberRow) -> None:
        """services.members._repeat_enroll: the same data again is a no-op."""
        if m.erased:
            raise Conflict(
                f"member {m.code} was erased and cannot be enrolled again under that id",
                hint="enroll the person under a new member id",
            )
        differs = [
            key
            for key, value in row.given.items()
            if value is not None and getattr(m, key) != value
        ]
        if differs:
            raise Conflict(
                f"member {m.code} is already enrolled in program {self.ctx.key} with a different "
                + ", ".join(differs),
                hint=f"change details with: loyaltyctl member update {m.code} …",
            )

    def _check_refs_free(self, row: MemberRow) -> None:
        for ref in (signup_ref(row.code), opening_ref(row.code)):
            if ref in self.known or ref in self.applied:
                raise Conflict(
                    f"reference {ref} is already used by another transaction in program "
                    f"{self.ctx.key}",
                    hint="a new member's signup and opening references must be free",
                )

    def _enroll(self, row: MemberRow) -> None:
        """services.members.enroll and _signup_bonus, then the opening credit."""
        at = row.at or self.now
        rules = self.book.at(at)
        m = MemberState(
            id=next(self.member_ids),
            code=row.code,
            status="active",
            tier=rules.first_tier,
            tier_since=None,
            enrolled_at=at,
            balance=0,
            debt=0,
            last_purchase_at=None,
            erased=False,
            **row.given,
        )
        m.new = True
        self.members[row.code] = self.touched[row.code] = m
        batch = self.batch
        batch.tier_changes.append(
            (m.id, m.tier, batch.bulk.day(local_date(at, rules.tz)), "enrol", batch.now_s, None)
        )
        if rules.bonus_qualifies:
            self.tracker.fresh(m.id)
        points = rules.signup_bonus
        if points > 0:
            batch = self.batch
            txn_id = batch.next_txn_id()
            at_s = batch.bulk.ts(at)
            day = local_date(at, rules.tz)
            qual = points if rules.bonus_qualifies else 0
            batch.credit(
                m,
                txn_id,
                rules.id,
                "bonus",
                "bonus",
                points,
                at_s,
                at_s,
                rules.expires(day),
            )
            if qual:
                self.tracker.add(m.id, at, qual, 0, 0)
                self._upgrade(m, rules, day)
            payload = json.dumps({"kind": "bonus", "member": m.code, "reason": "signup"})
            self._store(
                (
                    txn_id,
                    self.ctx.id,
                    m.id,
                    signup_ref(m.code),
                    "bonus",
                    at_s,
                    batch.now_s,
                    None,
                    payload,
                    points,
                    m.balance,
                    m.tier,
                    None,
                    "signup bonus",
                    qual,
                    0,
                    0,
                    at_s,
                    rules.id,
                ),
                at,
                at,
            )
        if row.opening:
            self._opening(m, row)

    def _opening(self, m: MemberState, row: MemberRow) -> bool:
        """Points brought from another system: an adjustment-like credit dated at the
        enrolment, into a lot of kind "opening" that expires on opening_expires or by the
        program's expiry policy."""
        ref = opening_ref(m.code)
        at = m.enrolled_at
        payload = {
            "kind": "adjust",
            "member": m.code,
            "points": row.opening,
            "reason": OPENING_REASON,
            "expires": row.expires.isoformat() if row.expires else None,
        }
        found = self._found(ref)
        if found is not None:
            if not found.same_request(payload, at):
                raise self._conflict(ref, found.kind)
            return False
        rules = self.book.at(at)
        batch = self.batch
        txn_id = batch.next_txn_id()
        at_s = batch.bulk.ts(at)
        day = local_date(at, rules.tz)
        qual = row.opening if rules.bonus_qualifies else 0
        batch.credit(
            m,
            txn_id,
            rules.id,
            "adjust",
            "opening",
            row.opening,
            at_s,
            at_s,
            row.expires or rules.expires(day),
        )
        if qual:
            self.tracker.add(m.id, at, qual, 0, 0)
            self._upgrade(m, rules, day)
        text_ = _canonical({**payload, "at": at.isoformat()})
        self._store(
            (
                txn_id,
                self.ctx.id,
                m.id,
                ref,
                "adjust",
                at_s,
                batch.now_s,
                None,
                text_,
                row.opening,
                m.balance,
                m.tier,
                None,
                OPENING_REASON,
                qual,
                0,
                0,
                at_s,
                rules.id,
            ),
            at,
            at,
        )
        return True
