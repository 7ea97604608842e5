"""The store: connection settings, schema upgrades, refusal of newer databases, the bulk
writer's updates and id reservations."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from typer.testing import CliRunner

from loyaltyctl.cli.main import app
from loyaltyctl.store.bulk import Bulk
from loyaltyctl.store.db import (
    SCHEMA_HEAD,
    current_revision,
    make_engine,
    resolve_url,
    session_scope,
)
from loyaltyctl.store.models import Member
from tests.conftest import PROGRAMS, Cli


def test_sqlite_connections_are_durable_and_strict(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    engine.dispose()


def test_every_command_brings_the_schema_up_to_date(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    db.touch()  # an empty file is an empty SQLite database; a missing one is not found
    result = CliRunner().invoke(app, ["--db", str(db), "program", "list", "--json"])
    assert result.exit_code == 0 and result.stdout.strip() == "[]"
    engine = make_engine(resolve_url(str(db)))
    assert current_revision(engine) == SCHEMA_HEAD
    engine.dispose()
    assert CliRunner().invoke(app, ["--db", str(db), "db", "upgrade"]).exit_code == 0


def test_a_database_from_a_newer_version_is_refused(engine: Engine, db_url: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    result = CliRunner().invoke(app, ["--db", db_url, "program", "list"])
    assert result.exit_code == 10
    assert "newer than this loyaltyctl knows" in result.stderr


def test_default_database_lives_in_the_user_data_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["program", "list", "--json"])
    assert result.exit_code == 10 and "not found: no database at" in result.stderr
    assert not (tmp_path / "xdg" / "loyaltyctl").exists()
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0
    assert (tmp_path / "xdg" / "loyaltyctl" / "loyaltyctl.db").exists()
    result = CliRunner().invoke(app, ["program", "list", "--json"])
    assert result.exit_code == 0 and result.stdout.strip() == "[]"


def test_postgres_urls_are_normalised() -> None:
    assert resolve_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_url("relative.db").startswith("sqlite:////")


def test_bulk_updates_keep_types_nulls_and_the_last_row_of_an_id(cli: Cli, engine: Engine) -> None:
    # Several rows go by COPY into a temporary table on PostgreSQL, twice in one
    # transaction (as batches of one import do).
    cli("program", "load", str(PROGRAMS / "coffee.toml"))
    for code in ("M1", "M2", "M3"):
        cli("member", "enroll", code, "--at", "2026-01-01")
    with session_scope(engine) as session:
        ids: dict[str, int] = dict(session.execute(text("SELECT code, id FROM member")).all())
        bulk = Bulk(session)
        at = datetime(2026, 2, 3, 4, 5, 6, 789000, tzinfo=UTC)
        fields = ("balance", "tier_since", "last_purchase_at")
        bulk.update("member", fields, [(1, None, None, ids["M1"]), (2, None, None, ids["M2"])])
        bulk.update(
            "member",
            fields,
            [
                (10**15, bulk.day(date(2026, 2, 1)), bulk.ts(at), ids["M1"]),
                (-7, None, None, ids["M2"]),
                (5, None, None, ids["M1"]),  # the last row of an id wins
            ],
        )
        bulk.update("member", ("balance",), [(3, ids["M3"])])
    with session_scope(engine) as session:
        rows = session.execute(
            select(
                Member.code, Member.balance, Member.tier_since, Member.last_purchase_at
            ).order_by(Member.code)
        ).all()
    assert [tuple(r) for r in rows] == [("M1", 5, None, None), ("M2", -7, None, None),
                                        ("M3", 3, None, None)]  # fmt: skip
    with session_scope(engine) as session:
        bulk = Bulk(session)
        bulk.update(
            "member",
            fields,
            [(10**15, bulk.day(date(2026, 2, 1)), bulk.ts(at), ids["M1"]),
             (0, None, None, ids["M2"])],
        )  # fmt: skip
    with session_scope(engine) as session:
        m1 = session.execute(select(Member).where(Member.code == "M1")).scalar_one()
    assert (m1.balance, m1.tier_since, m1.last_purchase_at) == (10**15, date(2026, 2, 1), at)


def test_reserved_ids_follow_the_sequence_even_with_gaps(
    backend: str, cli: Cli, engine: Engine
) -> None:
    if backend != "postgresql":
        pytest.skip("ids come from a sequence on PostgreSQL only")
    with session_scope(engine) as session:
        bulk = Bulk(session)
        first = bulk.sequence_ids("txn", 3)
        assert list(first) == [first[0], first[0] + 1, first[0] + 2]
        assert bulk.watermark("txn") == first[-1]
        # What a concurrent writer's ids in between look like from this session.
        session.execute(text(f"ALTER SEQUENCE {bulk._sequence('txn')} INCREMENT BY 2"))
        assert list(bulk.sequence_ids("txn", 3)) == [first[-1] + d for d in (2, 4, 6)]
