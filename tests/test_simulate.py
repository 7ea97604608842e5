"""`program simulate`: hand-worked cases through the CLI, on both databases, the demo
database, and a SQLite file left byte-for-byte as it was."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from freezegun import freeze_time

from tests.conftest import PROGRAMS, Cli, write_program

REPO = Path(__file__).resolve().parent.parent

SHOP = """
[program]
key = "shop"
name = "Shop"
currency = "EUR"
timezone = "Europe/Berlin"

[earn]
per_unit = {per_unit}
rounding = "floor"

[expiry]
policy = "rolling"
months = {months}

[tiers]
metric = "points"

[[tiers.levels]]
key = "basic"
min = 0

[[tiers.levels]]
key = "silver"
min = {silver}

[[rewards]]
key = "mug"
name = "Mug"
cost = 50
"""


def shop(
    tmp_path: Path, name: str, per_unit: str = "1", months: int = 12, silver: int = 100
) -> Path:
    text = SHOP.format(per_unit=per_unit, months=months, silver=silver)
    return write_program(tmp_path, text, name)


@pytest.fixture
def history(cli: Cli, tmp_path: Path) -> Cli:
    """A, B, C: purchases in January and March, a mug redeemed in March and cancelled,
    and an expiry run as of 1 April."""
    with freeze_time("2026-01-01T00:00:00Z"):
        cli("program", "load", str(shop(tmp_path, "shop.toml")))
    with freeze_time("2026-06-01T00:00:00Z"):
        for member in ("A", "B", "C"):
            cli("member", "enroll", member, "--at", "2026-01-05")
        cli("txn", "post", "A", "--ref", "a1", "--amount", "10.50", "--at", "2026-01-10")
        cli("txn", "post", "A", "--ref", "a2", "--amount", "7.75", "--at", "2026-03-05")
        cli("txn", "post", "B", "--ref", "b1", "--amount", "80.00", "--at", "2026-01-20")
        cli("txn", "post", "C", "--ref", "c1", "--amount", "55.00", "--at", "2026-03-01")
        code = cli.json("reward", "redeem", "C", "mug", "--ref", "r1", "--at", "2026-03-02")[
            "voucher"
        ]
        cli("reward", "cancel", code, "--at", "2026-03-03")
        cli("reward", "redeem", "C", "mug", "--ref", "r2", "--at", "2026-03-04")
        cli("expire", "--as-of", "2026-04-01")
    return cli


def simulate(cli: Cli, path: Path, *args: str) -> dict:
    with freeze_time("2026-06-01T00:00:00Z"):
        return cli.json("program", "simulate", str(path), "--to", "2026-05-31", *args)


def test_the_loaded_program_changes_nothing(history: Cli, tmp_path: Path) -> None:
    result = simulate(history, shop(tmp_path, "same.toml"))
    assert (result["program"], result["from"], result["to"]) == ("shop", "2026-01-05", "2026-05-31")
    assert result["actual"] == result["simulated"]
    assert set(result["delta"].values()) <= {0, "0.00"}
    assert result["tier_moves"] == [] and result["members_changed"] == 0
    assert result["redemptions_refused"] == 0
    assert result["actual"]["points_issued"] == 10 + 7 + 80 + 55


def test_doubling_per_unit_from_a_date_doubles_what_is_earned_after_it(
    history: Cli, tmp_path: Path
) -> None:
    # From 1 March: A's 7.75 earns floor(15.5) = 15 (not 2 × 7 = 14), C's 55.00 earns 110;
    # A's 10.50 and B's 80.00 of January keep their 10 and 80.
    result = simulate(history, shop(tmp_path, "double.toml", per_unit="2"), "--from", "2026-03-01")
    assert result["from"] == "2026-03-01"
    assert result["simulated"]["points_issued"] == 10 + 15 + 80 + 110
    assert result["delta"]["points_issued"] == (15 - 7) + (110 - 55)
    # C: 110 - 50 (the second mug) = 60 instead of 5, and silver with 110 points.
    assert result["delta"]["points_outstanding"] == 63
    assert result["tier_moves"] == [{"from": "basic", "to": "silver", "members": 1}]


def test_a_lower_threshold_moves_the_members_it_names(history: Cli, tmp_path: Path) -> None:
    # Silver from 60 points: B (80) moves up; A (17) and C (55) do not.
    out = tmp_path / "members.csv"
    result = simulate(history, shop(tmp_path, "silver.toml", silver=60), "--members-out", str(out))
    assert result["tier_moves"] == [{"from": "basic", "to": "silver", "members": 1}]
    assert result["simulated"]["tiers"] == {"basic": 2, "silver": 1}
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [(r["member"], r["actual_tier"], r["simulated_tier"]) for r in rows] == [
        ("B", "basic", "silver")
    ]
    assert rows[0]["actual_balance"] == rows[0]["simulated_balance"] == "80"


def test_shorter_expiry_expires_the_lots_it_names(history: Cli, tmp_path: Path) -> None:
    # One month: A's January lot (10, due 10 Feb), B's (80, due 20 Feb) and C's of 1
    # March (due 1 April, the day of the run; 5 left after the mug) go at the run as of
    # 1 April; A's March lot (due 5 April) stays.
    out = tmp_path / "members.jsonl"
    result = simulate(history, shop(tmp_path, "short.toml", months=1), "--members-out", str(out))
    assert result["actual"]["points_expired"] == 0
    assert result["simulated"]["points_expired"] == 10 + 80 + 5
    changed = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["member"], r["simulated_balance"]) for r in changed] == [
        ("A", 7),
        ("B", 0),
        ("C", 0),
    ]


def test_a_redemption_only_the_old_rules_allow_is_refused(history: Cli, tmp_path: Path) -> None:
    # Half a point per euro: C earns 27, short of the mug's 50 both times; the
    # cancellation of the first mug is skipped with it.
    result = simulate(history, shop(tmp_path, "half.toml", per_unit="0.5"))
    assert result["redemptions_refused"] == 2
    assert result["cancellations_skipped"] == 1
    assert result["simulated"]["points_redeemed"] == 0
    assert result["actual"]["points_redeemed"] == 50


def test_writes_nothing_and_refuses_another_program(history: Cli, tmp_path: Path) -> None:
    with freeze_time("2026-06-01T00:00:00Z"):
        history("program", "simulate", str(PROGRAMS / "deli.toml"), code=3)
    text = history("program", "simulate", str(shop(tmp_path, "x.toml", per_unit="2"))).stdout
    assert "points_issued" in text and "liability at month end" in text


def test_sqlite_file_unchanged_and_demo_database_simulates_to_zero(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh"), str(db)],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip

    def dump() -> str:
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return "\n".join(conn.iterdump())

    before = dump()
    raw = db.read_bytes()
    cli = Cli(str(db))
    for name in ("coffee", "retail", "airline"):
        result = cli.json("program", "simulate", str(PROGRAMS / f"{name}.toml"))
        assert set(result["delta"].values()) <= {0, "0.00"}, (name, result)
        assert result["members_changed"] == 0 and result["redemptions_refused"] == 0
    assert db.read_bytes() == raw
    assert dump() == before
