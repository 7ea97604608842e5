"""Engine and session factory from a URL, schema upgrades on first use.

SQLite gets WAL, ``synchronous=FULL``, foreign keys and a busy timeout on every
connection, and write transactions open with ``BEGIN IMMEDIATE``: a deferred transaction
that later upgrades to a write cannot be retried by the busy timeout and fails at once
with "database is locked".
"""

from __future__ import annotations

import errno
import math
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from loyaltyctl.errors import Busy, InvalidInput, LoyaltyError, Unusable

# The newest migration this code knows; kept beside the migrations and checked by a test,
# so a command can tell whether the schema is current without loading Alembic.
SCHEMA_HEAD = "0008"

DEFAULT_BUSY_TIMEOUT = 30.0
MAX_BUSY_TIMEOUT = 86400.0
# Seconds to wait for a PostgreSQL server that does not answer, so that a wrong host
# fails in a bounded time instead of hanging a cron job.
PG_CONNECT_TIMEOUT = 10


def default_database_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "loyaltyctl" / "loyaltyctl.db"


def resolve_url(db: str | None, *, create: bool = True) -> str:
    """``--db`` or ``LOYALTYCTL_DB`` or the default file; a plain path means SQLite.

    ``create=False`` (read-only commands) leaves the default folder alone."""
    value = db or os.environ.get("LOYALTYCTL_DB") or ""
    if not value:
        path = default_database_path()
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser().resolve()}"
    if value.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


def sqlite_path(url: str) -> str:
    """The file of a SQLite URL ("" for an in-memory database)."""
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return path.split("?", 1)[0]


def describe(url: str) -> str:
    """How messages name a database: its file, or its URL without the password."""
    if url.startswith("sqlite"):
        return sqlite_path(url) or url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url.split("@", 1)[-1] if "@" in url else url


def busy_timeout() -> float:
    raw = os.environ.get("LOYALTYCTL_BUSY_TIMEOUT")
    if not raw:
        return DEFAULT_BUSY_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= MAX_BUSY_TIMEOUT):
        raise InvalidInput(
            f"LOYALTYCTL_BUSY_TIMEOUT={raw!r} is not a number of seconds"
            f" between 0 and {MAX_BUSY_TIMEOUT:g}",
            hint="set it to e.g. 30",
        )
    return value


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, must_exist: bool = False) -> Engine:
    """An engine for ``url``; ``must_exist`` (read-only commands) refuses a SQLite file
    that is not there instead of creating it."""
    timeout = busy_timeout()
    if url.startswith("sqlite"):
        return _sqlite_engine(url, timeout, must_exist=must_exist)
    if url.startswith("postgresql"):
        return _postgres_engine(url, timeout)
    raise Unusable(
        f"unsupported database URL {describe(url)!r}",
        hint="use a file path for SQLite or postgresql+psycopg://user@host/dbname",
    )


def sqlite_read_only(path: str) -> bool:
    """True when the file exists but cannot be opened for writing (permissions, a
    read-only mount); a root user's chmod 444 file is writable and so is not."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return True
        raise Unusable(
            f"cannot open database {path}: {exc.strerror}",
            hint="check the path and its permissions",
        ) from exc
    os.close(fd)
    return False


def _check_sqlite_path(path: str, *, must_exist: bool) -> None:
    target = Path(path)
    if target.is_dir():
        raise Unusable(
            f"cannot open database {path}: it is a directory, not a database file",
            hint=f"pass a file, e.g. --db {target / 'loyaltyctl.db'}",
        )
    if must_exist and not target.exists():
        raise Unusable(
            f"not found: no database at {path}",
            hint="check --db or LOYALTYCTL_DB; a command that writes"
            " (loyaltyctl db upgrade, program load FILE) creates it",
        )
    if not target.parent.is_dir():
        raise Unusable(
            f"cannot open database {path}: folder {target.parent} does not exist",
            hint="check the path in --db or LOYALTYCTL_DB, or create the folder",
        )
    if target.exists() and not target.is_file():
        raise Unusable(
            f"cannot open database {path}: it is not a regular file",
            hint="pass the path of a SQLite database file",
        )


def _sqlite_engine(url: str, timeout: float, *, must_exist: bool = False) -> Engine:
    path = sqlite_path(url)
    read_only = False
    if path and path != ":memory:":
        _check_sqlite_path(path, must_exist=must_exist)
        read_only = sqlite_read_only(path)
    if read_only:
        # A WAL database on a read-only mount cannot create its -shm file: without a
        # -wal file there is nothing beyond the main file to read, so it is opened as
        # immutable; with one, read-only (which needs the -shm file to exist too).
        query = "mode=ro" if os.path.exists(path + "-wal") else "immutable=1"
        uri = f"file:{quote(path)}?{query}"
        engine = create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(uri, uri=True, timeout=timeout),
        )
    else:
        engine = create_engine(url, connect_args={"timeout": timeout})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Driver-level autocommit, so that our own BEGIN below is the only one.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        if not read_only:
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = FULL")
        cur.execute("PRAGMA foreign_keys = ON")
        # Erased members' personal data must not linger in free pages.
        cur.execute("PRAGMA secure_delete = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _postgres_engine(url: str, timeout: float) -> Engine:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        port = parsed.port
    except (ArgumentError, ValueError) as exc:
        raise Unusable(
            f"cannot read the database URL {describe(url)!r}: {exc}",
            hint="write it as postgresql+psycopg://user:password@host:5432/dbname",
        ) from exc
    if parsed.drivername not in ("postgresql", "postgresql+psycopg"):
        raise Unusable(
            f"unsupported database driver {parsed.drivername!r} in {describe(url)!r}",
            hint="use postgresql+psycopg://user@host/dbname",
        )
    if port is not None and not 0 < port < 65536:
        raise Unusable(
            f"database URL {describe(url)!r} has port {port}, outside 1-65535",
            hint="the PostgreSQL default is 5432",
        )
    if not parsed.database:
        raise Unusable(
            f"database URL {describe(url)!r} names no database",
            hint="add it after the host: postgresql+psycopg://user@host/dbname",
        )
    ms = int(timeout * 1000)
    connect_args: dict[str, Any] = {"options": f"-c lock_timeout={ms} -c timezone=UTC"}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT
    return create_engine(
        parsed.set(drivername="postgresql+psycopg"),
        connect_args=connect_args,
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
    except DBAPIError as exc:
        session.rollback()
        translated = translate_database_error(exc, describe(str(engine.url)))
        if translated is None:
            raise
        raise translated from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# What the drivers say, lowercased, and what it means for the person at the terminal.
# SQLite's messages are fixed strings; PostgreSQL's (through libpq) are its server's and
# libpq's English messages.
_PROBLEMS: list[tuple[tuple[str, ...], str, str]] = [
    (
        ("readonly database", "read-only transaction", "read-only file system"),
        "is read-only",
        "commands that only read still work; to write, make the file and its folder"
        " writable (or use a writable copy)",
    ),
    (
        ("database or disk is full", "disk is full", "no space left on device"),
        "is on a full disk",
        "free some space and run the command again; nothing of this command was written",
    ),
    (
        ("file is not a database", "not a database"),
        "is not a SQLite database",
        "point --db or LOYALTYCTL_DB at the loyaltyctl database file",
    ),
    (
        ("malformed", "corrupt"),
        "is corrupt",
        "restore it from a backup; `sqlite3 FILE .recover` may save what is left",
    ),
    (
        ("unable to open database file",),
        "cannot be opened",
        "check the path, its folder and their permissions",
    ),
    (
        ("disk i/o error",),
        "cannot be read or written (disk I/O error)",
        "check the disk and the file; restore from a backup if it persists",
    ),
    (
        ("password authentication failed", "no password supplied", "role"),
        "refused the login",
        "check the user name and password in the URL (or in ~/.pgpass)",
    ),
    (
        ("could not translate host name", "name or service not known", "name resolution"),
        "cannot be reached: the host name is unknown",
        "check the host name in the URL",
    ),
    (
        ("does not exist",),
        "does not exist on the server",
        "check the database name in the URL, or create it (createdb NAME)",
    ),
    (
        (
            "connection refused",
            "connection failed",
            "could not connect",
            "timeout expired",
            "server closed the connection",
            "connection to server",
            "no route to host",
        ),
        "cannot be reached",
        "check the host and port in the URL and that the PostgreSQL server is running",
    ),
]


def translate_database_error(exc: BaseException, where: str | None = None) -> LoyaltyError | None:
    """The error to report for a driver error, or None when it is not the database's
    fault (a constraint the code should have kept, a bad statement: a bug)."""
    from sqlalchemy.exc import DatabaseError, InterfaceError, OperationalError

    if not isinstance(exc, OperationalError | InterfaceError) and type(exc) is not DatabaseError:
        return None
    orig = getattr(exc, "orig", None)
    text_ = " ".join(str(orig if orig is not None else exc).split())
    lowered = text_.lower()
    if any(
        word in lowered for word in ("database is locked", "lock timeout", "could not obtain lock")
    ):
        return Busy(
            f"the database stayed locked past the timeout ({text_})",
            hint="another loyaltyctl is writing; try again, or raise LOYALTYCTL_BUSY_TIMEOUT",
        )
    name = f"database {where}" if where else "the database"
    for words, what, hint in _PROBLEMS:
        if any(word in lowered for word in words):
            return Unusable(f"{name} {what} ({text_})", hint=hint)
    return Unusable(f"{name} cannot be used ({text_})", hint="check the database and its server")


def translate_operational_error(exc: OperationalError) -> LoyaltyError:
    return translate_database_error(exc) or LoyaltyError(f"database error: {exc}")


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            if not inspect(conn).has_table("alembic_version"):
                return None
            row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
        finally:
            conn.rollback()
    return row[0] if row else None


def ensure_schema(engine: Engine, *, read_only: bool = False) -> None:
    """Bring the schema up to date on first use; refuse a database from a newer version."""
    where = describe(str(engine.url))
    try:
        revision = current_revision(engine)
    except DBAPIError as exc:
        translated = translate_database_error(exc, where)
        if translated is None:
            raise
        raise translated from exc
    if revision == SCHEMA_HEAD:
        return
    from loyaltyctl.store.migrate import known_revisions, upgrade

    if revision is not None and revision not in known_revisions():
        raise Unusable(
            f"database {where} is at schema revision {revision}, newer than this loyaltyctl knows",
            hint="upgrade loyaltyctl (pip install -U loyaltyctl) before using this database",
        )
    if read_only:
        raise Unusable(
            f"database {where} is read-only and its schema"
            f" ({revision or 'empty'}) needs an upgrade to {SCHEMA_HEAD}",
            hint="run loyaltyctl db upgrade on a writable copy",
        )
    try:
        upgrade(engine)
    except DBAPIError as exc:
        translated = translate_database_error(exc, where)
        if translated is None:
            raise
        raise translated from exc


def open_database(db: str | None, *, write: bool = True) -> Engine:
    """The engine of ``--db``, its schema current. ``write=False`` (commands that only
    read) never creates a database and works on a read-only one; ``write=True`` says at
    once when the database is read-only."""
    url = resolve_url(db, create=write)
    engine = make_engine(url, must_exist=not write)
    try:
        path = sqlite_path(url) if url.startswith("sqlite") else ""
        read_only = bool(path) and sqlite_read_only(path)
        if read_only and write:
            raise Unusable(
                f"database {path} is read-only",
                hint="commands that only read still work; to write, make the file and"
                " its folder writable (or use a writable copy)",
            )
        ensure_schema(engine, read_only=read_only)
    except BaseException:
        engine.dispose()
        raise
    return engine


def purge_freed_pages(db: str | None) -> None:
    """After an erasure is committed: the old values must not linger on disk. SQLite
    (``secure_delete`` is on for every connection) zeroes freed space but keeps old
    pages in the ``-wal`` file until a checkpoint, which this forces; PostgreSQL keeps
    dead row versions until a vacuum of the member table."""
    engine = make_engine(resolve_url(db, create=False))
    try:
        if is_sqlite(engine):
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM member")
    finally:
        engine.dispose()
