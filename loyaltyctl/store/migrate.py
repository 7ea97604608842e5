"""Alembic, loaded only when the schema has to change."""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "loyaltyctl:migrations")
    return cfg


def known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine, revision: str = "head") -> None:
    _migrate(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    _migrate(engine, command.downgrade, revision)


def _migrate(engine: Engine, step: Callable[[Config, str], object], revision: str) -> None:
    """One transaction. SQLite changes a table's keys by copying it, and dropping the old
    copy of a table others refer to fails its key checks even when the new copy takes
    its place: so they are off while migrating (a pragma that only takes effect outside
    a transaction) and every key is checked before the commit instead."""
    cfg = alembic_config()
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection if conn.dialect.name == "sqlite" else None
        if raw is not None:
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                step(cfg, revision)
                if raw is not None:
                    _check_keys(conn)
        finally:
            if raw is not None:
                raw.execute("PRAGMA foreign_keys = ON")


def _check_keys(conn: Connection) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchmany(5)
    if broken:
        from loyaltyctl.errors import Unusable

        found = "; ".join(f"{table} row {rowid} names a missing {parent}" for table, rowid,
                          parent, _ in broken)  # fmt: skip
        raise Unusable(
            f"the schema upgrade was not made: the database has references to missing rows "
            f"({found})",
            hint="restore the database from a backup, or ask for help with the rows named",
        )
