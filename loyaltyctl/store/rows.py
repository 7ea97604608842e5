"""Many rows into one table on the connection's own transaction, the fast way of each
database: ``executemany`` on SQLite, ``COPY`` on PostgreSQL. Values are in the form the
table stores (``store.bulk.Bulk.ts`` for times on SQLite). The bulk writer, the event
feed and the audit all write through here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError


def insert_rows(
    connection: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Insert ``rows`` (``columns`` each) into ``table``. A unique key lost to another
    writer surfaces as SQLAlchemy's IntegrityError, which the CLI answers by running the
    (idempotent) command once more."""
    raw: Any = connection.connection.dbapi_connection
    dbapi: Any = connection.dialect.dbapi
    names = ", ".join(columns)
    if connection.dialect.name == "sqlite":
        sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
        try:
            with contextlib.closing(raw.cursor()) as cur:
                cur.executemany(sql, rows)
        except dbapi.IntegrityError as exc:
            raise IntegrityError(sql, None, exc) from exc
        return
    sql = f"COPY {table} ({names}) FROM STDIN"
    try:
        with raw.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except dbapi.IntegrityError as exc:
        raise IntegrityError(sql, None, exc) from exc
