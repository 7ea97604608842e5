"""Engine and session factory from a URL, schema upgrades on first use.

SQLite gets WAL, ``synchronous=FULL``, foreign keys and a busy timeout on every
connection, and write transactions open with ``BEGIN IMMEDIATE``: a deferred transaction
that later upgrades to a write cannot be retried by the busy timeout and fails at once
with "database is locked".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from loyaltyctl.errors import Busy, InvalidInput, LoyaltyError

# The newest migration this code knows; kept beside the migrations and checked by a test,
# so a command can tell whether the schema is current without loading Alembic.
SCHEMA_HEAD = "0005"

DEFAULT_BUSY_TIMEOUT = 30.0


def default_database_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "loyaltyctl" / "loyaltyctl.db"


def resolve_url(db: str | None) -> str:
    """``--db`` or ``LOYALTYCTL_DB`` or the default file; a plain path means SQLite."""
    value = db or os.environ.get("LOYALTYCTL_DB") or ""
    if not value:
        path = default_database_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser().resolve()}"
    if value.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


def busy_timeout() -> float:
    raw = os.environ.get("LOYALTYCTL_BUSY_TIMEOUT")
    try:
        return float(raw) if raw else DEFAULT_BUSY_TIMEOUT
    except ValueError as exc:
        raise InvalidInput(
            f"LOYALTYCTL_BUSY_TIMEOUT={raw!r} is not a number of seconds",
            hint="set it to e.g. 30",
        ) from exc


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    timeout = busy_timeout()
    if url.startswith("sqlite"):
        return _sqlite_engine(url, timeout)
    if url.startswith("postgresql"):
        return _postgres_engine(url, timeout)
    raise InvalidInput(
        f"unsupported database URL {url!r}",
        hint="use a file path for SQLite or postgresql+psycopg://user@host/dbname",
    )


def _sqlite_engine(url: str, timeout: float) -> Engine:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        parent = Path(path).parent
        if not parent.is_dir():
            raise InvalidInput(
                f"cannot open database {path}: folder {parent} does not exist",
                hint="create the folder or pass another --db path",
            )
    engine = create_engine(url, connect_args={"timeout": timeout})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Driver-level autocommit, so that our own BEGIN below is the only one.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _postgres_engine(url: str, timeout: float) -> Engine:
    ms = int(timeout * 1000)
    return create_engine(
        url,
        connect_args={"options": f"-c lock_timeout={ms} -c timezone=UTC"},
        pool_pre_ping=False,
    )


@contextmanager
def session_scope(
    engine: Engine, *, write: bool = True, dry_run: bool = False
) -> Iterator[Session]:
    """One command, one transaction: commit on success, roll back on error or dry run."""
    from loyaltyctl.store.audit import install

    install()  # the audit rows of what the transaction changed, written at commit
    bind = engine.execution_options(sqlite_begin="IMMEDIATE") if write else engine
    session = Session(bind=bind, expire_on_commit=False)
    try:
        yield session
        if dry_run:
            session.rollback()
        else:
            session.commit()
    except OperationalError as exc:
        session.rollback()
        raise translate_operational_error(exc) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def translate_operational_error(exc: OperationalError) -> LoyaltyError:
    text_ = str(exc.orig) if exc.orig is not None else str(exc)
    lowered = text_.lower()
    if "locked" in lowered or "lock timeout" in lowered or "could not obtain lock" in lowered:
        return Busy(
            f"the database stayed locked past the timeout ({text_.strip()})",
            hint="another loyaltyctl is writing; try again, or raise LOYALTYCTL_BUSY_TIMEOUT",
        )
    return LoyaltyError(f"database error: {text_.strip()}")


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        except OperationalError:
            return None
        except Exception as exc:  # PostgreSQL: undefined table
            if "alembic_version" in str(exc):
                return None
            raise
        finally:
            conn.rollback()
    return row[0] if row else None


def ensure_schema(engine: Engine) -> None:
    """Bring the schema up to date on first use; refuse a database from a newer version."""
    try:
        revision = current_revision(engine)
    except OperationalError as exc:
        raise translate_operational_error(exc) from exc
    if revision == SCHEMA_HEAD:
        return
    from loyaltyctl.store.migrate import known_revisions, upgrade

    if revision is not None and revision not in known_revisions():
        raise InvalidInput(
            f"the database is at schema revision {revision}, newer than this loyaltyctl knows",
            hint="upgrade loyaltyctl (pip install -U loyaltyctl) before using this database",
        )
    upgrade(engine)


def open_database(db: str | None) -> Engine:
    engine = make_engine(resolve_url(db))
    try:
        ensure_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine
