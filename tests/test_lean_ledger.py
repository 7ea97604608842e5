"""Migration 0007 (the lean ledger): the member ledger tables without foreign keys and
with only the indexes the tool's queries read, upgraded in place from a 0006 database
with a ledger in it; and ``db check`` verifying the references the keys used to."""

from __future__ import annotations

from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine, inspect, text

from tests.conftest import Cli, assert_models_match_schema


def _fill(cli: Cli) -> None:
    """A ledger with purchases, a return, a redemption, and a cancelled voucher."""
    cli("member", "enroll", "M1", "--at", "2026-01-02")
    cli("member", "enroll", "M2", "--at", "2026-01-02")
    cli("txn", "post", "M1", "--ref", "P1", "--amount", "150.00", "--at", "2026-01-05T10:00")
    cli("txn", "post", "M2", "--ref", "P2", "--amount", "30.00", "--at", "2026-01-06T10:00")
    cli("txn", "return", "M2", "--ref", "R1", "--original", "P2", "--amount", "10.00",
        "--at", "2026-01-07T10:00")  # fmt: skip
    voucher = cli.json("reward", "redeem", "M1", "cookie", "--ref", "V1")
    cli.json("reward", "redeem", "M1", "cookie", "--ref", "V2")
    cli("reward", "cancel", voucher["voucher"])


def _migrate(engine: Engine, revision: str, *, down: bool = False) -> None:
    from loyaltyctl.store.migrate import downgrade, upgrade

    (downgrade if down else upgrade)(engine, revision)


def _keys(engine: Engine) -> dict[str, Any]:
    found = inspect(engine)
    tables = ("txn", "points_lot", "points_entry", "tier_change", "voucher", "audit")
    return {
        "foreign": {t: len(found.get_foreign_keys(t)) for t in tables},
        "indexes": {
            t: sorted(i["name"] for i in found.get_indexes(t) if not i.get("duplicates_constraint"))
            for t in ("txn", "points_lot", "points_entry")
        },
    }


@freeze_time("2026-02-01 12:00:00")
def test_0007_upgrades_a_0006_ledger_in_place(deli: Cli, engine: Engine) -> None:
    _fill(deli)
    _migrate(engine, "0006", down=True)
    before = _keys(engine)
    assert before["foreign"]["points_entry"] == 5
    assert "ix_points_lot_due" in before["indexes"]["points_lot"]
    with engine.connect() as conn:
        counts = conn.execute(
            text("SELECT (SELECT COUNT(*) FROM txn), (SELECT COUNT(*) FROM points_entry)")
        ).one()

    _migrate(engine, "head")

    after = _keys(engine)
    # audit keeps its key to the program (a small table, no write of a purchase).
    assert after["foreign"] == {**dict.fromkeys(after["foreign"], 0), "audit": 1}
    assert after["indexes"] == {
        "txn": ["ix_txn_member_occurred", "ix_txn_original"],
        "points_lot": ["ix_points_lot_member", "ix_points_lot_open"],
        "points_entry": ["ix_points_entry_member", "ix_points_entry_txn_id"],
    }
    with engine.connect() as conn:
        assert conn.execute(
            text("SELECT (SELECT COUNT(*) FROM txn), (SELECT COUNT(*) FROM points_entry)")
        ).one() == tuple(counts)
    deli.check()
    # The ledger goes on where it was.
    deli("txn", "post", "M2", "--ref", "P3", "--amount", "20.00", "--at", "2026-01-20T10:00")
    deli.check()
    assert_models_match_schema(engine)


BROKEN = [
    ("points_entry", "lot_id", "UPDATE points_entry SET lot_id = 999999 WHERE lot_id IS NOT NULL"),
    ("points_lot", "txn_id", "UPDATE points_lot SET txn_id = 999999"),
    ("txn", "original_id", "UPDATE txn SET original_id = 999999 WHERE kind = 'return'"),
    (
        "voucher",
        "cancel_txn_id",
        "UPDATE voucher SET cancel_txn_id = 999999 WHERE cancel_txn_id IS NOT NULL",
    ),  # fmt: skip
    ("tier_change", "member_id", "UPDATE tier_change SET member_id = 999999"),
]


@pytest.mark.parametrize(("table", "column", "sql"), BROKEN, ids=[b[1] for b in BROKEN])
@freeze_time("2026-02-01 12:00:00")
def test_db_check_finds_a_reference_to_nothing(
    deli: Cli, engine: Engine, table: str, column: str, sql: str
) -> None:
    _fill(deli)
    with engine.begin() as conn:
        assert conn.execute(text(sql)).rowcount > 0  # no foreign key stops it now
    found = deli.json("db", "check", code=8)
    assert not found["ok"]
    assert any(f"{column} 999999 names no" in p and p.startswith(table) for p in found["problems"])


@freeze_time("2026-02-01 12:00:00")
def test_an_upgrade_that_finds_broken_references_changes_nothing(
    backend: str, deli: Cli, engine: Engine, db_url: str
) -> None:
    """A 0006 file with a row naming a missing one (written with SQLite's key checks off,
    as another tool might): the upgrade says so, exit 10, and leaves the schema as it was."""
    import sqlite3

    if backend != "sqlite":
        pytest.skip("SQLite's key checks are off while it migrates; PostgreSQL's never are")

    from loyaltyctl.store.db import current_revision, sqlite_path

    _fill(deli)
    _migrate(engine, "0006", down=True)
    engine.dispose()
    raw = sqlite3.connect(sqlite_path(db_url))
    raw.execute("PRAGMA foreign_keys = OFF")
    # A key 0007 keeps (an audit row's program); the ledger tables' keys are gone after
    # it and their references are db check's to verify (above).
    raw.execute("UPDATE audit SET program_id = 999999 WHERE id = (SELECT MIN(id) FROM audit)")
    raw.commit()
    raw.close()

    result = deli("db", "upgrade", code=10)
    assert "references to missing rows" in result.stderr
    assert "audit row" in result.stderr
    assert current_revision(engine) == "0006"
