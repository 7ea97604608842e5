"""`db upgrade` on a ledger built by the previous version of loyaltyctl, not by this one
taken down: tests/fixtures/ledger-0006 holds a SQLite and a PostgreSQL database filled
by the version before migration 0007 (purchases, a return, an adjustment, an opening
balance, a transfer, a used and a cancelled voucher, a merge, an events cursor, a nightly
run, a second program) and what that version reported of them. After the upgrade the
same reports read the same, `db check` passes, the schema is the models', and the ledger
takes new work, including a return of a purchase the old version posted."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text

from loyaltyctl.store.db import SCHEMA_HEAD, make_engine
from tests.conftest import Cli, assert_models_match_schema

PREVIOUS = Path(__file__).parent / "fixtures" / "ledger-0006"
MEMBERS = ("C-1", "C-2", "C-3", "C-4")


def _sqlite_ledger(tmp_path: Path) -> str:
    path = tmp_path / "previous.db"
    with sqlite3.connect(path) as con:
        con.executescript((PREVIOUS / "sqlite" / "ledger.sql").read_text())
    con.close()
    return f"sqlite:///{path}"


def _postgresql_ledger(cluster: Any, name: str) -> str:
    admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    with psycopg.connect(cluster.dsn(name), autocommit=True) as con:
        con.execute((PREVIOUS / "postgresql" / "ledger.sql").read_text().encode())
    return cluster.url(name)


@pytest.fixture
def previous(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The previous version's database, as it left it."""
    if backend == "sqlite":
        return _sqlite_ledger(tmp_path)
    cluster = request.getfixturevalue("pg_cluster")
    return _postgresql_ledger(cluster, f"previous_{abs(hash(request.node.nodeid)) % 10**8}")


def _revision(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


def _reports(cli: Cli, out: Path) -> dict[str, str]:
    """The reports previous_ledger.sh took, taken again by this version."""
    found: dict[str, str] = {}
    beans = ("--program", "beans")
    for m in MEMBERS:
        found[f"txns-{m}.json"] = cli("txn", "list", m, "--json", *beans).stdout
        found[f"statement-{m}.json"] = cli(
            "statement", m, "--from", "2025-01-01", "--to", "2026-01-31", "--format", "json",
            *beans,
        ).stdout  # fmt: skip
    found["events.jsonl"] = cli("events", "list", "--json", *beans).stdout
    found["summary.json"] = cli(
        "report", "summary", "--as-of", "2026-02-01", "--json", *beans
    ).stdout
    for what, name in (("ledger", "ledger.csv"), ("members", "members-export.csv")):
        cli("export", what, "--out", str(out / name), *beans)
        found[name] = (out / name).read_text()
    return found


def _recorded(backend: str) -> dict[str, str]:
    folder = PREVIOUS / backend
    return {p.name: p.read_text() for p in folder.iterdir() if p.name != "ledger.sql"}


def test_upgrade_keeps_what_the_previous_version_recorded(
    previous: str, backend: str, tmp_path: Path
) -> None:
    cli = Cli(previous)
    engine = make_engine(previous)
    try:
        assert _revision(engine) == "0006"
        cli("db", "upgrade")
        assert _revision(engine) == SCHEMA_HEAD
        assert_models_match_schema(engine)
    finally:
        engine.dispose()
    cli.check()
    assert _reports(cli, tmp_path) == _recorded(backend)


def test_an_upgraded_ledger_takes_new_work(previous: str) -> None:
    cli = Cli(previous)
    beans = ("--program", "beans")
    before = 1657  # C-1's balance in the recorded members-export.csv
    # The first write upgrades the file (as any write command does), then posts.
    # A return of a purchase the previous version posted: its lots are found through its
    # earn entry, which that version wrote.
    back = cli.json(
        "txn", "return", "C-1", "--ref", "r-new", "--original", "t-008", "--amount", "4.50",
        "--at", "2026-02-10T10:00", *beans,
    )  # fmt: skip
    assert back["points"] == -45
    cli("txn", "post", "C-1", "--ref", "t-new", "--amount", "10.00", "--at", "2026-02-11T10:00",
        *beans)  # fmt: skip
    assert cli.json("member", "show", "C-1", *beans)["balance"] == before - 45 + 100
    cli(
        "reward",
        "redeem",
        "C-3",
        "free-drink",
        "--ref",
        "rd-new",
        "--at",
        "2026-02-12T09:00",
        *beans,
    )
    cli("nightly", "--as-of", "2026-03-01", *beans)
    # The consumer's cursor the previous version left: the pull goes on after event 5.
    pulled = [
        json.loads(line)
        for line in cli("events", "pull", "crm", "--json", *beans).stdout.splitlines()
    ]
    assert pulled[0]["id"] == 6
    posted = [e["data"]["ref"] for e in pulled if e["type"] == "txn.posted"]
    assert posted[-2:] == ["r-new", "t-new"]
    assert "voucher.issued" in {e["type"] for e in pulled}
    cli.check()
