"""Points, balances and job totals are 64-bit on both databases; identifiers have the same
length limits on both (exit 4 beyond them, never a database error)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.conftest import PROGRAMS, Cli, write_program
from tests.test_database_errors import one_error

BIG = 1_000_000_000_000  # the largest point figure one request may carry


def test_balances_past_32_bits(deli: Cli, engine: Engine) -> None:
    deli("member", "enroll", "M1", "--at", "2026-01-01")
    for n in range(3):
        deli("txn", "adjust", "M1", "--ref", f"A{n}", "--points", str(BIG), "--reason", "test")
    shown = deli.json("member", "show", "M1")
    assert shown["balance"] == 3 * BIG + 25
    deli("txn", "adjust", "M1", "--ref", "A-", "--points", str(-BIG), "--reason", "test")
    assert deli.json("member", "show", "M1")["balance"] == 2 * BIG + 25
    deli.check()
    summary = deli.json("report", "summary")
    assert summary["points_outstanding"] == 2 * BIG + 25
    with engine.connect() as conn:
        assert conn.execute(text("SELECT MAX(remaining) FROM points_lot")).scalar() == BIG


def test_a_night_expiring_more_than_32_bits(cli: Cli, tmp_path: Path) -> None:
    text_ = (PROGRAMS / "deli.toml").read_text()
    cli("program", "load", str(write_program(tmp_path, text_)))
    for m in range(3):
        cli("member", "enroll", f"M{m}", "--at", "2024-01-01")
        cli("txn", "adjust", f"M{m}", "--ref", f"A{m}", "--points", str(BIG),
            "--reason", "t", "--at", "2024-01-02")  # fmt: skip
    result = cli.json("expire", "--as-of", "2026-11-01")
    assert result["points_expired"] >= 3 * BIG
    cli.check()


@pytest.mark.parametrize(
    "args, words",
    [
        (["member", "enroll", "M" * 129], ["longer than 128"]),
        (["member", "show", "M" * 129], ["longer than 128"]),
        (["txn", "post", "M1", "--ref", "R" * 201, "--amount", "1"], ["longer than 200"]),
        (
            ["txn", "adjust", "M1", "--ref", "R" * 201, "--points", "1", "--reason", "x"],
            ["longer than 200"],
        ),  # fmt: skip
        (["member", "list", "--program", "p" * 65], ["longer than 64"]),
        (
            ["txn", "adjust", "M1", "--ref", "R", "--points", str(BIG + 1), "--reason", "x"],
            ["beyond"],
        ),  # fmt: skip
    ],
)
def test_identifiers_past_their_limits(deli: Cli, args: list[str], words: list[str]) -> None:
    deli("member", "enroll", "M1")
    one_error(deli(*args, code=None), 4, *words)
    assert deli.json("member", "list") and len(deli.json("member", "list")) == 1


def test_identifiers_at_their_limits(deli: Cli) -> None:
    member = "M" * 128
    deli("member", "enroll", member)
    deli("txn", "post", member, "--ref", "R" * 200, "--amount", "1.00")
    assert deli.json("member", "show", member)["member"] == member


def test_a_program_key_past_64_characters(cli: Cli, tmp_path: Path) -> None:
    text_ = (PROGRAMS / "deli.toml").read_text().replace('key = "deli"', f'key = "{"d" * 65}"', 1)
    path = write_program(tmp_path, text_)
    one_error(cli("program", "validate", str(path), code=None), 4, "longer than 64")
    one_error(cli("program", "load", str(path), code=None), 4, "longer than 64")
    assert cli.json("program", "list") == []


# Every table whose ids come from a sequence and grow with the purchases (migration 0008).
GROWING = ("txn", "points_lot", "points_entry", "tier_change", "voucher", "event", "audit")


def test_ids_past_32_bits(deli: Cli, engine: Engine, backend: str) -> None:
    """A ledger whose ids have passed 2,147,483,647 on PostgreSQL takes every kind of
    write and reads back whole (SQLite's INTEGER ids are 64-bit already)."""
    if backend == "sqlite":
        pytest.skip("SQLite's ids are 64-bit rowids")
    start = 3_000_000_000
    with engine.begin() as conn:
        for table in GROWING:
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :v)"),
                {"t": table, "v": start},
            )
    deli("member", "enroll", "M1", "--at", "2026-01-01")
    deli("member", "enroll", "M2", "--at", "2026-01-01")
    deli("txn", "post", "M1", "--ref", "P1", "--amount", "150.00", "--at", "2026-01-05T10:00")
    deli("txn", "return", "M1", "--ref", "R1", "--original", "P1", "--amount", "50.00",
         "--at", "2026-01-06T10:00")  # fmt: skip
    voucher = deli.json("reward", "redeem", "M1", "cookie", "--ref", "V1")["voucher"]
    deli("reward", "cancel", voucher)
    deli("txn", "transfer", "M1", "M2", "--points", "10", "--ref", "X1")
    deli("member", "merge", "M2", "M1", "--ref", "G1")
    pulled = deli("events", "pull", "crm", "--json").stdout.splitlines()
    assert pulled and all(json.loads(line)["id"] > start for line in pulled)
    assert deli("events", "pull", "crm", "--json").stdout == ""
    assert deli.json("txn", "show", "R1")["ref"] == "R1"
    with engine.connect() as conn:
        for table in ("txn", "points_lot", "points_entry", "voucher", "event", "audit"):
            assert conn.execute(text(f"SELECT MAX(id) FROM {table}")).scalar() > start
    deli.check()
