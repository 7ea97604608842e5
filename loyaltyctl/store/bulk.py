"""Writing a batch of postings: ids reserved, inserts and updates of many rows at once
(``executemany`` on SQLite, ``COPY`` on PostgreSQL), member caches, and the events the
rows imply; times and dates in each database's stored form. What a batch reads first is
in ``store.lookups``."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from loyaltyctl.ledger.postings import (
    ENTRY_COLUMNS,
    LOT_COLUMNS,
    TIER_CHANGE_COLUMNS,
    TXN_COLUMNS,
    VOUCHER_COLUMNS,
    Postings,
)
from loyaltyctl.ledger.state import MemberState
from loyaltyctl.rules.search import email_key, phone_rev
from loyaltyctl.store.audit import note_postings
from loyaltyctl.store.eventlog import write_events
from loyaltyctl.store.lookups import any_of, param_values
from loyaltyctl.store.models import metadata
from loyaltyctl.store.rows import insert_rows

SQLITE_CACHE_KIB = 96 * 1024


# First key of PostgreSQL's advisory lock that makes imports of one program take turns.
_IMPORT_LOCK = 0x4C4F5949


TXN_INSERT = TXN_COLUMNS
LOT_INSERT = LOT_COLUMNS
ENTRY_INSERT = ENTRY_COLUMNS
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
    "email_key",
    "phone_rev",
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
        self._sequences: dict[str, str] = {}
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
        value = self.session.execute(
            text(
                "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "
                f"FROM {self._sequence(table)}"
            )
        ).scalar_one()
        return int(value)

    def _sequence(self, table: str) -> str:
        """The name of the sequence of ``table``'s ids, looked up once: as a literal in
        the statements that use it, it is resolved once per statement, not once per id."""
        seq = self._sequences.get(table)
        if seq is None:
            seq = self._sequences[table] = self.session.execute(
                text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}
            ).scalar_one()
        return seq

    def sequence_ids(self, table: str, count: int) -> Sequence[int]:
        """``count`` ids from ``table``'s sequence, in increasing order. They come back as
        a range when nobody took ids in between (the usual case), in one row whatever
        the count."""
        if count <= 0:
            return []
        literal = "'" + self._sequence(table).replace("'", "''") + "'"
        low, high, gaps = self.session.execute(
            text(
                f"WITH s AS (SELECT nextval({literal}) AS v FROM generate_series(1, :n)) "
                "SELECT MIN(v), MAX(v), CASE WHEN MAX(v) - MIN(v) + 1 = COUNT(*) THEN NULL "
                "ELSE array_agg(v ORDER BY v) END FROM s"
            ),
            {"n": count},
        ).one()
        if gaps is not None:
            return [int(v) for v in gaps]
        return range(int(low), int(high) + 1)

    def txn_ids(self, count: int, mark: int | None) -> tuple[Iterator[int], int, bool]:
        """Ids for at most ``count`` new transactions, the mark to pass next time, and
        whether anyone else took a transaction id since ``mark`` (what the last call
        returned, then ``mark_after``; None the first time)."""
        last = self.watermark("txn")
        stale = mark is not None and last != mark
        if self.sqlite:
            return itertools.count(last + 1), last, stale
        ids = self.sequence_ids("txn", count)
        stale = stale or (bool(ids) and (ids[0], ids[-1]) != (last + 1, last + len(ids)))
        return iter(ids), ids[-1] if ids else last, stale

    def mark_after(self, mark: int, last_txn_id: int | None) -> int:
        """The mark once a batch that used ids up to ``last_txn_id`` is written: on SQLite
        ids are taken at insert, so the watermark is then the batch's last id; on
        PostgreSQL the ids were taken when reserved."""
        if self.sqlite and last_txn_id is not None:
            return last_txn_id
        return mark

    def ids(self, table: str, count: int) -> Iterator[int]:
        """New primary keys: after MAX(id) inside SQLite's write transaction (nobody else
        can insert meanwhile), ``count`` at most from the table's sequence on PostgreSQL."""
        if self.sqlite:
            return itertools.count(self.max_id(table) + 1)
        return iter(self.sequence_ids(table, count))

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            insert_rows(self.session.connection(), table, columns, rows)

    def update(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """``UPDATE table SET columns… WHERE id = …``: each row is the values, then the id.

        On PostgreSQL several rows go by ``COPY`` into a temporary table of the same
        column types and one ``UPDATE … FROM`` it: a statement per row would cost a
        round trip and an index lookup each. The temporary table lives until the end of
        the transaction and is emptied by the update that reads it (a later batch of the
        same transaction reuses it). A single row (a single command) is a plain UPDATE."""
        if not rows:
            return
        mark = "?" if self.sqlite else "%s"
        if self.sqlite or len(rows) == 1:
            sets = ", ".join(f"{name} = {mark}" for name in columns)
            self._run(f"UPDATE {table} SET {sets} WHERE id = {mark}", rows)
            return
        # One row per id, the last one winning, as one statement per row would leave it
        # (UPDATE … FROM applies an arbitrary one of several matches).
        unique = list({row[-1]: row for row in rows}.values())
        names = ", ".join((*columns, "id"))
        tmp = f"bulk_{table}"
        self._execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {tmp} ON COMMIT DROP AS "
            f"SELECT {names} FROM {table} WITH NO DATA"
        )
        self.insert(tmp, (*columns, "id"), unique)
        sets = ", ".join(f"{name} = u.{name}" for name in columns)
        self._execute(
            f"WITH u AS (DELETE FROM {tmp} RETURNING {names}) "
            f"UPDATE {table} AS t SET {sets} FROM u WHERE t.id = u.id"
        )

    def move(self, table: str, changes: dict[int, dict[str, Any]]) -> None:
        """Give rows to another member: each row of ``table`` by id, with the columns of
        ``changes[id]`` replaced, deleted and inserted again under the same id. A
        database distributed by member moves a row between shards only that way (Citus
        refuses an UPDATE of the distribution column; docs/scaling.md)."""
        if not changes:
            return
        columns = [c.name for c in metadata.tables[table].columns]
        connection = self.session.connection()
        where = any_of(self.session, "id", "ids")
        params = {"ids": param_values(self.session, changes)}
        read: Any = connection.execute(
            text(f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"), params
        )
        rows = []
        for found in read:
            row = dict(zip(columns, found, strict=True))
            row.update(changes[row["id"]])
            rows.append(tuple(row[c] for c in columns))
        connection.execute(text(f"DELETE FROM {table} WHERE {where}"), params)
        self.insert(table, columns, rows)

    # A unique key lost to a concurrent writer surfaces as SQLAlchemy's IntegrityError,
    # which the CLI answers by running the (idempotent) command once more.

    def _run(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            with contextlib.closing(self.raw.cursor()) as cur:
                cur.executemany(sql, rows)
        except self.dbapi.IntegrityError as exc:
            raise IntegrityError(sql, None, exc) from exc

    def _execute(self, sql: str) -> None:
        try:
            with self.raw.cursor() as cur:
                cur.execute(sql)
        except self.dbapi.IntegrityError as exc:
            raise IntegrityError(sql, None, exc) from exc


def write_postings(
    bulk: Bulk,
    postings: Postings,
    members: Iterable[MemberState],
    held: dict[int, MemberState] | None = None,
) -> None:
    """Store a batch: new members, transactions, lots, entries, then the caches. With
    ``held``, changed members' cached balances and tiers are not written but added to it,
    for ``write_member_caches`` once at the end (an import in one transaction: nobody
    else reads them meanwhile, and each member is written once instead of per batch)."""
    new_members: list[tuple[Any, ...]] = []
    changed: list[MemberState] = []
    now_s = postings.now_s
    for m in members:
        if m.new:
            last = bulk.ts(m.last_purchase_at) if m.last_purchase_at else None
            new_members.append(
                (
                    m.id, postings.program_id, m.code, m.name, m.email, m.phone,
                    bulk.day(m.birthday), "active", m.tier, bulk.day(m.tier_since),
                    bulk.ts(m.enrolled_at), m.balance, m.debt, last, now_s,
                    email_key(m.email), phone_rev(m.phone),
                )
            )  # fmt: skip
        elif m.changed:
            if held is None:
                changed.append(m)
            else:
                held[m.id] = m
    note_postings(bulk.session, postings.program_id, postings.txns, new_members)
    bulk.insert("member", MEMBER_INSERT, new_members)
    bulk.insert("txn", TXN_INSERT, postings.txns)
    bulk.insert("tier_change", TIER_CHANGE_COLUMNS, postings.tier_changes)
    bulk.insert("points_lot", LOT_INSERT, postings.lots)
    bulk.insert("points_entry", ENTRY_INSERT, postings.entries)
    bulk.update("points_lot", ("remaining",), postings.lot_updates())
    bulk.insert("voucher", VOUCHER_COLUMNS, postings.vouchers)
    bulk.update("voucher", ("status", "cancelled_at", "cancel_txn_id"), postings.voucher_updates)
    write_member_caches(bulk, changed)
    write_events(bulk.session, posting_events(bulk, postings, members))


def write_member_caches(bulk: Bulk, members: Iterable[MemberState]) -> None:
    """The members' cached balance, debt, tier and last purchase, as the ledger has them."""
    bulk.update(
        "member",
        ("balance", "debt", "tier", "tier_since", "last_purchase_at"),
        [
            (
                m.balance, m.debt, m.tier, bulk.day(m.tier_since),
                bulk.ts(m.last_purchase_at) if m.last_purchase_at else None, m.id,
            )
            for m in members
        ],
    )  # fmt: skip


def _iso(bulk: Bulk, stored: Any) -> str:
    """ISO 8601 (UTC) of a time in the form ``bulk.ts`` made."""
    if bulk.sqlite:  # "2026-01-10 15:00:00.000000", as datetime.isoformat() writes it
        fraction = stored[19:] if stored[20:] != "000000" else ""
        return stored[:10] + "T" + stored[11:19] + fraction + "+00:00"
    return str(stored.isoformat())


def _amount(minor: int | None, digits: int) -> str:
    if minor is None:
        return "null"
    if not digits:
        return f'"{minor}"'
    whole, part = divmod(minor, 10**digits)
    return f'"{whole}.{part:0{digits}d}"'


# Their own events say these: voucher.issued / voucher.cancelled, member.merged.
_OWN_EVENT_KINDS = frozenset(("redeem", "refund", "merge"))


def posting_events(
    bulk: Bulk, postings: Postings, members: Iterable[MemberState]
) -> list[tuple[Any, ...]]:
    """The events of a batch, derived from its rows (so a batch cannot be stored without
    them): ``member.enrolled`` for each new member, then each transaction's
    ``txn.posted`` followed by the tier changes it caused (``member.tier_changed``).
    Written out as text: this runs for every row of an import."""
    program_id = postings.program_id
    now_s = postings.now_s
    codes: dict[int, str] = {}
    events: list[tuple[Any, ...]] = []
    for m in members:
        codes[m.id] = m.code
        if m.new:
            data = (
                '{"enrolled_at":' + _json_str(m.enrolled_at.isoformat())
                + ',"tier":' + _json_str(m.tier) + "}"
            )  # fmt: skip
            events.append((now_s, "member.enrolled", program_id, m.code, data, None))
    by_txn: dict[int, list[tuple[Any, ...]]] = {}
    for member_id, tier, effective, reason, _recorded, txn_id in postings.tier_changes:
        if reason == "enrol":  # member.enrolled says it
            continue
        day = effective if isinstance(effective, str) else effective.isoformat()
        data = (
            '{"effective_on":"' + day + '","reason":"' + reason
            + '","tier":' + _json_str(tier) + "}"
        )  # fmt: skip
        row = (now_s, "member.tier_changed", program_id, codes.get(member_id), data, None)
        by_txn.setdefault(txn_id, []).append(row)
    digits = postings.digits
    for t in postings.txns:
        if t[4] in _OWN_EVENT_KINDS:
            continue
        store = t[19]
        data = (
            '{"amount":' + _amount(t[7], digits)
            + ',"at":"' + _iso(bulk, t[5])
            + '","balance":' + str(t[10])
            + ',"kind":"' + t[4]
            + '","points":' + str(t[9])
            + ',"ref":' + _json_str(t[3])
            + ',"store":' + ("null" if store is None else _json_str(store))
            + ',"tier":' + _json_str(t[11]) + "}"
        )  # fmt: skip
        events.append((now_s, "txn.posted", program_id, codes.get(t[2]), data, None))
        if by_txn and (changes := by_txn.pop(t[0], None)):
            events.extend(changes)
    for changes in by_txn.values():
        events.extend(changes)
    return events
