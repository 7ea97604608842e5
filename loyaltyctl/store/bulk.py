"""The bulk paths of each database for imports: set lookups of what a batch refers to
(members, references, returns so far, open lots, qualifying activity), and inserts and
updates of many rows at once (``executemany`` on SQLite, ``COPY`` on PostgreSQL). This is
where imports tell SQLite from PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from sqlalchemy import TextualSelect, text
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
from loyaltyctl.ledger.state import KnownTxn, MemberState, OpenLot
from loyaltyctl.rules.earning import Totals
from loyaltyctl.rules.search import email_key, phone_rev
from loyaltyctl.store.audit import note_postings
from loyaltyctl.store.eventlog import write_events
from loyaltyctl.store.models import metadata
from loyaltyctl.store.rows import insert_rows

SQLITE_CACHE_KIB = 96 * 1024


# First key of PostgreSQL's advisory lock that makes imports of one program take turns.
_IMPORT_LOCK = 0x4C4F5949


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
    # Steps after ``after`` are rare in an import in time order: they are found through
    # the (member_id, effective_on) index, and only for them the tier before is looked up.
    stmt = _typed(
        "SELECT c.member_id, c.effective_on, (SELECT p.tier FROM tier_change p "
        "WHERE p.member_id = c.member_id AND (p.effective_on < c.effective_on "
        "OR (p.effective_on = c.effective_on AND p.id < c.id)) "
        "ORDER BY p.effective_on DESC, p.id DESC LIMIT 1) AS tier "
        f"FROM tier_change c WHERE {_any(session, 'c.member_id', 'ids')} "
        "AND c.effective_on > :after ORDER BY c.member_id, c.effective_on, c.id",
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
            f"WHERE {_any(session, 'original_id', 'ids')} AND original_id IS NOT NULL "
            "AND kind = 'return' "
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


def fetch_spendable_lots(session: Session, member_id: int, at: Any) -> list[OpenLot]:
    """The member's lots with points left that may be spent at ``at`` (the stored form
    of a time: ``Bulk.ts``), in the order debits take them."""
    rows: Any = session.connection().execute(
        text(
            f"SELECT {_LOT_COLUMNS} FROM points_lot WHERE member_id = :m AND remaining > 0 "
            f"AND available_at <= :at ORDER BY {_LOT_ORDER}"
        ),
        {"m": member_id, "at": at},
    )
    return [OpenLot(lot_id, txn_id, expires, earned, left) for _, lot_id, txn_id, expires,
            earned, left in rows]  # fmt: skip


def fetch_lots_with_availability(session: Session, member_id: int) -> list[tuple[OpenLot, Any]]:
    """All the member's lots with points left, pending ones too, in the order debits take
    them, each with the time it becomes spendable (as read: text on SQLite)."""
    rows: Any = session.connection().execute(
        text(
            f"SELECT {_LOT_COLUMNS}, available_at FROM points_lot "
            f"WHERE member_id = :m AND remaining > 0 ORDER BY {_LOT_ORDER}"
        ),
        {"m": member_id},
    )
    return [(OpenLot(lot_id, txn_id, expires, earned, left), available) for _, lot_id, txn_id,
            expires, earned, left, available in rows]  # fmt: skip


def fetch_taken_lots(session: Session, txn_id: int) -> list[tuple[OpenLot, int, date | None]]:
    """The lots a transaction (a redemption) took points from: each lot, how many, and
    its expiry date, in the order it took them."""
    stmt = text(
        "SELECT l.id, l.txn_id, l.expires_on, l.earned_at, l.remaining, -SUM(e.points) "
        "AS taken, MIN(e.id) AS first FROM points_entry e JOIN points_lot l ON l.id = e.lot_id "
        "WHERE e.txn_id = :t GROUP BY l.id, l.txn_id, l.expires_on, l.earned_at, l.remaining "
        "ORDER BY first"
    )
    rows: Any = session.connection().execute(stmt, {"t": txn_id})
    return [
        (OpenLot(lot_id, lot_txn, expires, earned, left), int(taken), _as_date(expires))
        for lot_id, lot_txn, expires, earned, left, taken, _ in rows
        if taken > 0
    ]


def _as_date(value: Any) -> date | None:
    """A date column read by plain SQL: text on SQLite, a date on PostgreSQL."""
    return date.fromisoformat(value) if isinstance(value, str) else value


def add_lots_of_txns(
    session: Session, members: dict[int, MemberState], txn_ids: Iterable[int]
) -> None:
    """Add to the lots already loaded for ``members`` the open lots the transactions
    ``txn_ids`` made (purchases being returned), where missing. Found through the
    purchases' entries (a lot has no index by transaction; its earn entry has)."""
    rows = session.connection().execute(
        text(
            "SELECT l.member_id, l.id, l.txn_id, l.expires_on, l.earned_at, l.remaining "
            "FROM points_entry e JOIN points_lot l ON l.id = e.lot_id "
            f"WHERE {_any(session, 'e.txn_id', 'own')} AND l.txn_id = e.txn_id "
            "AND l.remaining > 0"
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


def fetch_activity(session: Session, member_ids: Iterable[int], since: datetime) -> Any:
    """The qualifying activity of ``member_ids`` dated ``since`` or later: rows of
    (member_id, qual_at, qual_points, qual_spend_minor, qual_visits)."""
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
    return session.connection().execute(
        stmt, {"ids": _values(session, member_ids), "since": since_value}
    )


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
        ids = sorted(changes)
        connection = self.session.connection()
        read: Any = connection.execute(
            text(
                f"SELECT {', '.join(columns)} FROM {table} WHERE {_any(self.session, 'id', 'ids')}"
            ),
            {"ids": _values(self.session, ids)},
        )
        rows = []
        for found in read:
            row = dict(zip(columns, found, strict=True))
            row.update(changes[row["id"]])
            rows.append(tuple(row[c] for c in columns))
        connection.execute(
            text(f"DELETE FROM {table} WHERE {_any(self.session, 'id', 'ids')}"),
            {"ids": _values(self.session, ids)},
        )
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
