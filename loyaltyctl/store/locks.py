"""The job lock: one runner of a program's nightly jobs at a time.

PostgreSQL: ``pg_try_advisory_xact_lock`` on a connection of its own whose transaction
lasts as long as the run; the server drops it when that connection closes, so a killed
run cannot leave it behind. The holder is named from ``pg_stat_activity``.

SQLite has no advisory locks: a ``job_lock`` row is claimed in its own short
``BEGIN IMMEDIATE`` transaction and deleted after the run. Holding the database's write
lock for the whole run would also serialise runs, but a waiting runner could then not tell
who holds it; the row names the holder, and a row left by a dead process on this host is
taken over.

The lock is taken with a connection of its own (not the caller's session) because it must
outlive the run's transactions and, on SQLite, be committed before them.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.exc import OperationalError

from loyaltyctl.errors import Busy
from loyaltyctl.store.db import busy_timeout, is_sqlite, translate_operational_error
from loyaltyctl.store.models import metadata

_lock_table = metadata.tables["job_lock"]

POLL_SECONDS = 0.2
# While another runner holds SQLite's write lock, a claim attempt gives up quickly and
# polls again, so that the wait stays bounded by the job-lock timeout and the holder
# can be named.
_SQLITE_CLAIM_BUSY_MS = 250
_HOLDER_RE = re.compile(r"^(\d+)@(\S+) since ")


@dataclass(frozen=True)
class LockHolder:
    """Who we are, as written into the lock."""

    pid: int
    host: str
    since: datetime

    def __str__(self) -> str:
        return f"{self.pid}@{self.host} since {self.since.strftime('%Y-%m-%dT%H:%M:%SZ')}"


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_xact_lock``."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def holder_is_dead(holder: str, *, host: str | None = None) -> bool:
    """True when ``holder`` names a process of this host that no longer exists."""
    match = _HOLDER_RE.match(holder)
    if not match or match[2] != (host or socket.gethostname()):
        return False
    pid = int(match[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextmanager
def job_lock(
    engine: Engine, name: str, *, now: datetime, timeout: float | None = None
) -> Iterator[LockHolder]:
    """Hold the lock ``name`` for the ``with`` block, waiting up to ``timeout`` seconds
    (``LOYALTYCTL_BUSY_TIMEOUT`` by default) for another holder; Busy names that holder."""
    me = LockHolder(os.getpid(), socket.gethostname(), now.astimezone(UTC))
    wait = busy_timeout() if timeout is None else timeout
    # Counted in sleeps rather than clock readings: tests freeze the clock.
    attempts = max(1, int(wait / POLL_SECONDS) + 1)
    if is_sqlite(engine):
        with _sqlite_lock(engine, name, me, attempts):
            yield me
    else:
        with _postgres_lock(engine, name, me, attempts):
            yield me


def _busy(name: str, holder: str | None) -> Busy:
    who = holder or "another process (it finished or could not be identified)"
    return Busy(
        f"another run holds the job lock {name}: {who}",
        hint="wait for it to finish, or raise LOYALTYCTL_BUSY_TIMEOUT to wait longer; "
        "a lock left by a process that died on this host is taken over automatically",
    )


# ---- PostgreSQL ----------------------------------------------------------------------


@contextmanager
def _postgres_lock(engine: Engine, name: str, me: LockHolder, attempts: int) -> Iterator[None]:
    key = lock_key(name)
    conn = engine.connect()
    try:
        for attempt in range(attempts):
            if conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar():
                break
            if attempt == attempts - 1:
                raise _busy(name, _postgres_holder(conn, key))
            time.sleep(POLL_SECONDS)
        # Local to the lock's transaction: the waiting runner reads it from pg_stat_activity.
        conn.execute(
            text("SELECT set_config('application_name', :v, true)"),
            {"v": f"loyaltyctl {me}"[:63]},
        )
        yield
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


def _postgres_holder(conn: Connection, key: int) -> str | None:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        text(
            """
            SELECT a.application_name, a.pid, a.client_addr, a.xact_start
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.classid::bigint = :hi AND l.objid::bigint = :lo
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            """
        ),
        {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
    ).first()
    if row is None:
        return None
    app, pid, addr, started = row
    label = app.removeprefix("loyaltyctl ") if app and app.startswith("loyaltyctl ") else None
    if label:
        return f"{label} (PostgreSQL backend {pid})"
    since = started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if started else "?"
    where = f" from {addr}" if addr else ""
    return f"PostgreSQL backend {pid}{where} ({app or 'no application name'}) since {since}"


# ---- SQLite ------------------------------------------------------------------------------


@contextmanager
def _sqlite_lock(engine: Engine, name: str, me: LockHolder, attempts: int) -> Iterator[None]:
    holder = str(me)
    claimed = False
    last_seen: str | None = None
    with engine.connect() as conn:
        for attempt in range(attempts):
            current = _sqlite_holder(conn)
            last_seen = current.get(name)
            if last_seen is None or holder_is_dead(last_seen):
                claimed, last_seen = _sqlite_claim(engine, name, holder, me.since)
                if claimed:
                    break
            if attempt < attempts - 1:
                time.sleep(POLL_SECONDS)
    if not claimed:
        raise _busy(name, last_seen)
    try:
        yield
    finally:
        _sqlite_release(engine, name, holder)


def _sqlite_holder(conn: Connection) -> dict[str, str]:
    try:
        rows = conn.execute(select(_lock_table.c.name, _lock_table.c.holder)).all()
    finally:
        conn.rollback()
    return {row[0]: row[1] for row in rows}


def _sqlite_claim(
    engine: Engine, name: str, holder: str, since: datetime
) -> tuple[bool, str | None]:
    """Claim the row in a short write transaction: (claimed, holder seen)."""
    table = _lock_table
    bind = engine.execution_options(sqlite_begin="IMMEDIATE")
    try:
        with bind.connect() as conn:
            # On the driver's connection: a statement through SQLAlchemy would begin the
            # transaction before BEGIN IMMEDIATE does.
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.execute(f"PRAGMA busy_timeout = {_SQLITE_CLAIM_BUSY_MS}")
            try:
                with conn.begin():
                    found = conn.execute(
                        select(table.c.holder).where(table.c.name == name)
                    ).scalar()
                    if found is None:
                        conn.execute(
                            insert(table).values(name=name, holder=holder, acquired_at=since)
                        )
                    elif holder_is_dead(found):
                        conn.execute(
                            update(table)
                            .where(table.c.name == name, table.c.holder == found)
                            .values(holder=holder, acquired_at=since)
                        )
                    else:
                        return False, found
            finally:
                driver.execute(f"PRAGMA busy_timeout = {int(busy_timeout() * 1000)}")
    except OperationalError as exc:
        if translate_operational_error(exc).exit_code == Busy.exit_code:
            return False, None
        raise
    return True, holder


def _sqlite_release(engine: Engine, name: str, holder: str) -> None:
    table = _lock_table
    bind = engine.execution_options(sqlite_begin="IMMEDIATE")
    with bind.begin() as conn:
        conn.execute(delete(table).where(table.c.name == name, table.c.holder == holder))
