"""The store: connection settings, schema upgrades, refusal of newer databases."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text
from typer.testing import CliRunner

from loyaltyctl.cli.main import app
from loyaltyctl.store.db import SCHEMA_HEAD, current_revision, make_engine, resolve_url


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
