"""Set lookups of what a batch of postings refers to, on the session's own connection:
members, transactions by reference, returns so far, open lots in the order debits take
them, tier history and qualifying activity. One query per set, however large (a JSON
parameter on SQLite, an array on PostgreSQL); values come back in the stored form."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import TextualSelect, text
from sqlmodel import Session

from loyaltyctl.ledger.state import KnownTxn, MemberState, OpenLot
from loyaltyctl.rules.earning import Totals
from loyaltyctl.store.eventlog import is_sqlite, stored_time
from loyaltyctl.store.models import metadata


def any_of(session: Session, column: str, param: str) -> str:
    """``column`` is one of the values of parameter ``param`` (see ``param_values``): one JSON
    or array parameter however many values, where ``IN (…)`` would bind each."""
    if is_sqlite(session):
        return f"{column} IN (SELECT value FROM json_each(:{param}))"
    return f"{column} = ANY(:{param})"


def param_values(session: Session, values: Iterable[Any]) -> Any:
    items = sorted(set(values))
    return json.dumps(items) if is_sqlite(session) else items


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
    lock = "" if is_sqlite(session) else " FOR UPDATE"
    stmt = _typed(
        f"SELECT {', '.join(_MEMBER_FIELDS)} FROM member "
        f"WHERE program_id = :p AND {any_of(session, 'code', 'codes')} ORDER BY code{lock}",
        "member",
        *_MEMBER_FIELDS,
    )
    rows: Any = session.connection().execute(
        stmt, {"p": program_id, "codes": param_values(session, codes)}
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
        f"FROM tier_change c WHERE {any_of(session, 'c.member_id', 'ids')} "
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
            "ids": param_values(session, member_ids),
            "after": after.isoformat() if is_sqlite(session) else after,
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
        f"WHERE program_id = :p AND {any_of(session, 'ref', 'refs')}",
        "txn",
        *_KNOWN_FIELDS,
    )
    rows: Any = session.connection().execute(
        stmt, {"p": program_id, "refs": param_values(session, refs)}
    )
    return {row[0]: KnownTxn(*row[1:]) for row in rows}


def fetch_returned(session: Session, original_ids: Iterable[int]) -> dict[int, Totals]:
    """Per purchase: amount, points, qualifying points and spend of its returns so far."""
    rows: Any = session.connection().execute(
        text(
            "SELECT original_id, COALESCE(SUM(amount_minor), 0), COALESCE(SUM(points), 0), "
            "COALESCE(SUM(qual_points), 0), COALESCE(SUM(qual_spend_minor), 0) FROM txn "
            f"WHERE {any_of(session, 'original_id', 'ids')} AND original_id IS NOT NULL "
            "AND kind = 'return' "
            "GROUP BY original_id"
        ),
        {"ids": param_values(session, original_ids)},
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
              FROM points_lot WHERE {any_of(session, "member_id", "ids")} AND remaining > 0
            ) AS open_lot
            WHERE before < :most OR {any_of(session, "txn_id", "own")}"""
    )
    params = {
        "ids": param_values(session, by_id),
        "most": most,
        "own": param_values(session, own_txn_ids),
    }
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
            f"WHERE {any_of(session, 'e.txn_id', 'own')} AND l.txn_id = e.txn_id "
            "AND l.remaining > 0"
        ),
        {"own": param_values(session, txn_ids)},
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
        f"WHERE {any_of(session, 'member_id', 'ids')} AND qual_at >= :since",
        "txn",
        "member_id",
        "qual_at",
        "qual_points",
        "qual_spend_minor",
        "qual_visits",
    )
    since_value = stored_time(is_sqlite(session), since)
    return session.connection().execute(
        stmt, {"ids": param_values(session, member_ids), "since": since_value}
    )
