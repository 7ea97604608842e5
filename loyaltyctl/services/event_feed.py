"""Reading the event feed: ``events list`` and ``events pull`` with a cursor per consumer.

Delivery is at least once, in id order. A pull holds the consumer's lock (the job lock of
store/locks.py, named after the program and the consumer) from reading the cursor to
saving it, so two pulls of one consumer at once take turns and never deliver an event
twice; a second pull waits up to the busy timeout, then exits 7 naming the holder. The
events are delivered between short transactions, not inside one: on SQLite a write
transaction held while a mailer runs would stop every other writer. The cursor itself is
read and moved with its row locked (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite) and only from the value read, so even a writer that bypassed the lock could not
move it back."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlmodel import Session

from loyaltyctl.errors import Busy, InvalidInput
from loyaltyctl.services.context import ProgramContext, load_context
from loyaltyctl.services.events import EVENT_TYPES
from loyaltyctl.store.db import is_sqlite, session_scope
from loyaltyctl.store.locks import job_lock
from loyaltyctl.store.models import metadata

_event = metadata.tables["event"]
_cursor = metadata.tables["event_cursor"]

# Events read per transaction while pulling.
PULL_BATCH = 1000
MAX_CONSUMER = 100


@dataclass
class Event:
    id: int
    at: datetime
    type: str
    program: str
    member: str | None
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "type": self.type,
            "program": self.program,
            "member": self.member,
            "data": self.data,
        }

    def line(self) -> str:
        """The event as one line of JSON."""
        return json.dumps(self.as_json(), ensure_ascii=False)


def check_type(type_: str | None) -> None:
    if type_ is not None and type_ not in EVENT_TYPES:
        raise InvalidInput(
            f"unknown event type {type_!r}", hint="event types: " + ", ".join(EVENT_TYPES)
        )


def check_consumer(consumer: str) -> str:
    name = consumer.strip()
    if not name or len(name) > MAX_CONSUMER or not name.isprintable():
        raise InvalidInput(
            f"consumer name {consumer!r} must be 1 to {MAX_CONSUMER} printable characters",
            hint="name the program that reads the events, e.g. mailer",
        )
    return name


def list_events(
    session: Session,
    ctx: ProgramContext,
    *,
    after: int = 0,
    type_: str | None = None,
    limit: int | None = None,
) -> Iterator[Event]:
    """The program's events after id ``after``, oldest first."""
    check_type(type_)
    if limit is not None and limit < 1:
        raise InvalidInput(f"--limit {limit} must be at least 1")
    e = _event
    stmt = (
        select(e.c.id, e.c.at, e.c.type, e.c.member, e.c.data)
        .where(e.c.program_id == ctx.id, e.c.id > after)
        .order_by(e.c.id)
    )
    if type_ is not None:
        stmt = stmt.where(e.c.type == type_)
    if limit is not None:
        stmt = stmt.limit(limit)
    for id_, at, type_name, member, data in session.execute(stmt):
        yield Event(id_, at, type_name, ctx.key, member, json.loads(data))


@dataclass
class PullResult:
    program: str
    consumer: str
    delivered: int
    cursor: int
    # The event whose delivery failed (it comes again at the next pull), if any.
    failed: Event | None = None


def _read_cursor(session: Session, program_id: int, consumer: str) -> int:
    """The consumer's cursor, its row locked; a new consumer starts before the first event."""
    c = _cursor
    stmt = select(c.c.last_id).where(c.c.consumer == consumer, c.c.program_id == program_id)
    if not is_sqlite(session.get_bind()):  # type: ignore[arg-type]
        stmt = stmt.with_for_update()
    found = session.execute(stmt).scalar()
    if found is not None:
        return int(found)
    session.execute(
        insert(c).values(
            consumer=consumer, program_id=program_id, last_id=0, updated_at=datetime.now(UTC)
        )
    )
    return 0


def _save_cursor(
    engine: Engine, program_id: int, consumer: str, old: int, new: int, now: datetime
) -> None:
    with session_scope(engine) as session:
        _read_cursor(session, program_id, consumer)
        c = _cursor
        moved = session.execute(
            update(c)
            .where(c.c.consumer == consumer, c.c.program_id == program_id, c.c.last_id == old)
            .values(last_id=new, updated_at=now)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            raise Busy(
                f"the cursor of consumer {consumer} moved while this pull ran",
                hint="run one pull per consumer at a time",
            )


def pull_events(
    engine: Engine,
    program: str | None,
    consumer: str,
    *,
    deliver: Callable[[Event], bool],
    limit: int | None = None,
    save_each: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> PullResult:
    """Deliver the events after the consumer's cursor, in order, and move the cursor past
    those ``deliver`` accepted (returned True); the first one refused stops the pull and
    is delivered again next time. ``save_each``: move the cursor after every event (a
    command run per event) rather than once at the end (a stream)."""
    name = check_consumer(consumer)
    if limit is not None and limit < 1:
        raise InvalidInput(f"--limit {limit} must be at least 1")
    with session_scope(engine, write=False) as session:
        ctx = load_context(session, program)
    result = PullResult(ctx.key, name, 0, 0)
    with job_lock(engine, f"loyaltyctl-events:{ctx.key}:{name}", now=clock()):
        with session_scope(engine) as session:
            start = _read_cursor(session, ctx.id, name)
        saved = last = result.cursor = start
        try:
            while limit is None or result.delivered < limit:
                want = PULL_BATCH if limit is None else min(PULL_BATCH, limit - result.delivered)
                with session_scope(engine, write=False) as session:
                    batch = list(list_events(session, ctx, after=last, limit=want))
                if not batch:
                    break
                for event in batch:
                    if not deliver(event):
                        result.failed = event
                        break
                    last = event.id
                    result.delivered += 1
                    if save_each:
                        _save_cursor(engine, ctx.id, name, saved, last, clock())
                        saved = last
                if result.failed is not None or len(batch) < want:
                    break
        finally:
            if last != saved:
                _save_cursor(engine, ctx.id, name, saved, last, clock())
            result.cursor = last
    return result
