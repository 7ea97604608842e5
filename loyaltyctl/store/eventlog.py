"""Writing and reading the event table: rows go in with the transaction of the change
they report, and ids increase in the order transactions commit within a program.

SQLite lets one writer in at a time (``BEGIN IMMEDIATE``), so an event row is inserted
at once and its id follows commit order by itself. PostgreSQL runs writers of different
members side by side: ids taken from the sequence in the middle of two transactions could
commit out of order, and a consumer that has read id 11 would never see id 10 committed
after it. So there the rows wait in the session until the commit, and are then written
(``COPY``) under a per-program transaction lock that is held until the commit ends: the
ids of one program are taken and committed one transaction at a time. Taking it last,
after every member lock, means it never waits on a lock a waiter of it holds."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import text
from sqlmodel import Session

from loyaltyctl.store.rows import insert_rows

EVENT_COLUMNS = ("at", "type", "program_id", "member", "data", "once")
# First key of PostgreSQL's advisory lock that orders event ids within a program.
EVENT_LOCK = 0x4C4F5945

_PENDING = "loyaltyctl.pending_events"
_HOOKED = "loyaltyctl.events_hooked"


def stored_time(sqlite: bool, moment: datetime) -> Any:
    """``moment`` (UTC) as SQLAlchemy's DateTime stores it on SQLite; as is elsewhere."""
    return moment.isoformat(" ", "microseconds")[:26] if sqlite else moment


def is_sqlite(session: Session) -> bool:
    return session.connection().dialect.name == "sqlite"


def write_events(session: Session, rows: Sequence[Sequence[Any]]) -> None:
    """Add event rows (``EVENT_COLUMNS``, ``at`` already in ``stored_time`` form) in the
    session's transaction: now on SQLite, at the commit on PostgreSQL."""
    if not rows:
        return
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        insert_rows(connection, "event", EVENT_COLUMNS, rows)
        return
    pending: list[Sequence[Any]] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
    if not session.info.get(_HOOKED):
        session.info[_HOOKED] = True
        sa_event.listen(session, "before_commit", _write_pending)
        sa_event.listen(session, "after_rollback", _drop_pending)
    pending.extend(rows)


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


def _write_pending(session: Session) -> None:
    rows = session.info.pop(_PENDING, None)
    if not rows:
        return
    connection = session.connection()
    # In program order, so two transactions that write events of several programs take
    # the locks in the same order.
    for program_id in sorted({row[2] for row in rows}):
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:k, :p)"), {"k": EVENT_LOCK, "p": program_id}
        )
    insert_rows(connection, "event", EVENT_COLUMNS, rows)


def existing_once(
    session: Session, program_id: int, type_: str, keys: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (member, once) pairs of ``keys`` already have an event of ``type_``."""
    wanted = set(keys)
    if not wanted:
        return set()
    members = sorted({member for member, _ in wanted})
    found: set[tuple[str, str]] = set()
    for start in range(0, len(members), 500):
        chunk = members[start : start + 500]
        marks = ", ".join(f":m{i}" for i in range(len(chunk)))
        params: dict[str, Any] = {f"m{i}": code for i, code in enumerate(chunk)}
        rows = session.execute(
            text(
                "SELECT member, once FROM event WHERE program_id = :p AND type = :t "
                f"AND once IS NOT NULL AND member IN ({marks})"
            ),
            {"p": program_id, "t": type_, **params},
        )
        found.update((member, once) for member, once in rows if (member, once) in wanted)
    return found
