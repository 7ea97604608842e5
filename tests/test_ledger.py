"""The ledger's hand-worked figures (docs/ledger.md) and the ledger's rules, on both
databases, through the CLI."""

from __future__ import annotations

from pathlib import Path

from freezegun import freeze_time

from tests.conftest import Cli, write_program

NOW = "2026-11-22T12:00:00Z"


def member(cli: Cli, code: str) -> dict:
    return cli.json("member", "show", code)


@freeze_time(NOW)
def test_m1_earning_categories_promotion_tier_and_return(deli: Cli) -> None:
    cli = deli
    enrolled = cli.json("member", "enroll", "M1", "--at", "2026-01-05")
    assert enrolled["points"] == 25
    t1 = cli.json(
        "txn",
        "post",
        "M1",
        "--ref",
        "T1",
        "--line",
        "sandwiches=8.99",
        "--line",
        "coffee-beans=12.00",
        "--line",
        "tobacco=10.00",
        "--at",
        "2026-01-10",
    )
    assert (t1["points"], t1["balance"], t1["tier"]) == (224, 249, "bronze")
    t2 = cli.json("txn", "post", "M1", "--ref", "T2", "--amount", "190.00", "--at", "2026-06-06")
    # The crossing purchase earns at the old tier; silver counts from the next one.
    assert (t2["points"], t2["balance"], t2["tier"]) == (1900, 2149, "silver")
    t3 = cli.json("txn", "post", "M1", "--ref", "T3", "--amount", "10.00", "--at", "2026-06-10")
    assert (t3["points"], t3["balance"]) == (62, 2211)
    r1 = cli.json(
        "txn",
        "return",
        "M1",
        "--ref",
        "R1",
        "--original",
        "T2",
        "--amount",
        "95.00",
        "--at",
        "2026-06-12",
    )
    assert (r1["points"], r1["balance"], r1["duplicate"]) == (-950, 1261, False)
    shown = member(cli, "M1")
    assert shown["balance"] == 1261
    assert shown["available"] == 1261 and shown["pending"] == 0
    assert shown["lifetime_earned"] == 25 + 224 + 1900 + 62
    # 20.99 + 190.00 + 10.00 − 95.00: excluded categories do not qualify.
    assert shown["qualifying"] == "125.99"
    assert shown["expiring"][:3] == [
        {"date": "2026-07-05", "points": 25},
        {"date": "2026-07-10", "points": 224},
        {"date": "2026-12-06", "points": 950},
    ]
    cli.check()


@freeze_time(NOW)
def test_retries_and_conflicts(deli: Cli) -> None:
    cli = deli
    cli("member", "enroll", "M1", "--at", "2026-01-05")
    first = cli.json("txn", "post", "M1", "--ref", "T3", "--amount", "10.00", "--at", "2026-06-10")
    again = cli.json("txn", "post", "M1", "--ref", "T3", "--amount", "10.00", "--at", "2026-06-10")
    assert again["duplicate"] is True
    assert (again["points"], again["balance"]) == (first["points"], first["balance"])
    # A retry that leaves out --at is still the same request.
    assert cli.json("txn", "post", "M1", "--ref", "T3", "--amount", "10.00")["duplicate"]
    conflict = cli("txn", "post", "M1", "--ref", "T3", "--amount", "11.00", code=5)
    assert "T3" in conflict.stderr and "error:" in conflict.stderr
    assert member(cli, "M1")["balance"] == first["balance"]
    cli("txn", "post", "M1", "--ref", "T2", "--amount", "190.00", "--at", "2026-06-06")
    cli("txn", "return", "M1", "--ref", "R1", "--original", "T2", "--amount", "95.00")
    before = member(cli, "M1")["balance"]
    over = cli(
        "txn", "return", "M1", "--ref", "R2", "--original", "T2", "--amount", "100.00", code=4
    )
    assert "95.00" in over.stderr
    assert member(cli, "M1")["balance"] == before
    cli.check()


@freeze_time(NOW)
def test_m2_return_after_points_spent_makes_a_debt_settled_by_next_earning(deli: Cli) -> None:
    cli = deli
    cli("member", "enroll", "M2", "--at", "2026-02-01")
    cli("txn", "post", "M2", "--ref", "T4", "--amount", "20.00", "--at", "2026-02-02")
    # Spending 100 the way a redemption does: signup 25 first (expires first), then 75 of T4.
    spent = cli.json(
        "txn",
        "adjust",
        "M2",
        "--ref",
        "X1",
        "--points",
        "-100",
        "--reason",
        "spend",
        "--at",
        "2026-02-03",
    )
    assert spent["balance"] == 25
    r2 = cli.json(
        "txn",
        "return",
        "M2",
        "--ref",
        "R2",
        "--original",
        "T4",
        "--amount",
        "20.00",
        "--at",
        "2026-02-04",
    )
    assert (r2["points"], r2["balance"]) == (-100, -75)
    assert member(cli, "M2")["debt"] == 75
    t5 = cli.json("txn", "post", "M2", "--ref", "T5", "--amount", "30.00", "--at", "2026-02-05")
    assert (t5["points"], t5["balance"]) == (150, 75)
    shown = member(cli, "M2")
    assert shown["debt"] == 0
    assert sum(e["points"] for e in shown["expiring"]) == 75
    cli.check()


NO_NEGATIVE = """
[program]
key = "strict"
name = "Strict"
currency = "USD"
timezone = "UTC"

[earn]
per_unit = 5
signup_bonus = 25
allow_negative = false
"""


@freeze_time(NOW)
def test_return_refused_when_program_forbids_negative_balance(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, NO_NEGATIVE)))
    cli("member", "enroll", "M2", "--at", "2026-02-01")
    cli("txn", "post", "M2", "--ref", "T4", "--amount", "20.00", "--at", "2026-02-02")
    cli("txn", "adjust", "M2", "--ref", "X1", "--points", "-100", "--reason", "spend")
    refused = cli(
        "txn", "return", "M2", "--ref", "R2", "--original", "T4", "--amount", "20.00", code=6
    )
    assert "negative" in refused.stderr
    assert member(cli, "M2")["balance"] == 25
    assert cli.json("txn", "list", "M2")[-1]["ref"] == "X1"
    cli.check()


@freeze_time(NOW)
def test_partial_returns_claw_back_exactly_what_was_earned(deli: Cli) -> None:
    cli = deli
    cli("member", "enroll", "M3", "--at", "2026-03-01")
    earned = cli.json("txn", "post", "M3", "--ref", "P", "--amount", "33.33")["points"]
    assert earned == 166  # 33.33 × 5 = 166.65, floored
    total = 0
    for i, part in enumerate(["10.00", "10.00", "13.33"]):
        total -= cli.json(
            "txn", "return", "M3", "--ref", f"R{i}", "--original", "P", "--amount", part
        )["points"]
    assert total == earned
    assert member(cli, "M3")["balance"] == 25
    assert member(cli, "M3")["qualifying"] == "0.00"
    cli.check()


PENDING = """
[program]
key = "pend"
name = "Pending"
currency = "EUR"
timezone = "Europe/Berlin"

[earn]
per_unit = 1
pending_days = 14
"""


def test_pending_points_count_but_cannot_be_spent(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, PENDING)))
    with freeze_time("2026-03-01T10:00:00Z"):
        cli("member", "enroll", "P1")
        cli("txn", "post", "P1", "--ref", "A", "--amount", "100.00")
        shown = member(cli, "P1")
        assert (shown["balance"], shown["pending"], shown["available"]) == (100, 100, 0)
        # A return inside the window cancels the pending points.
        cli("txn", "return", "P1", "--ref", "RA", "--original", "A", "--amount", "40.00")
        shown = member(cli, "P1")
        assert (shown["balance"], shown["pending"]) == (60, 60)
    with freeze_time("2026-03-15T10:00:01Z"):
        shown = member(cli, "P1")
        assert (shown["balance"], shown["pending"], shown["available"]) == (60, 0, 60)
    cli.check()


@freeze_time(NOW)
def test_bad_input_exits_4_or_3_and_changes_nothing(deli: Cli) -> None:
    cli = deli
    cli("member", "enroll", "M1", "--at", "2026-01-05")
    for amount in ["-5", "abc", "12.345", "1e3", "NaN", "inf", ""]:
        result = cli("txn", "post", "M1", "--ref", "B", "--amount", amount, code=4)
        assert "error:" in result.stderr and "Traceback" not in result.stderr
    cli("txn", "post", "M1", "--ref", "B", "--line", "beans", code=4)
    cli("txn", "post", "M1", "--ref", "B", "--amount", "1.00", "--at", "2026-13-01", code=4)
    early = cli("txn", "post", "M1", "--ref", "B", "--amount", "1.00", "--at", "2025-12-31", code=4)
    assert "before member M1 enrolled" in early.stderr
    missing = cli("txn", "post", "NOPE", "--ref", "B", "--amount", "1.00", code=3)
    assert "member NOPE not found in program deli" in missing.stderr
    assert "loyaltyctl member enroll NOPE" in missing.stderr
    cli("txn", "return", "M1", "--ref", "B", "--original", "ZZ", "--amount", "1.00", code=3)
    cli("txn", "post", "M1", "--ref", "B", code=4)
    assert cli.json("txn", "list", "M1") == [cli.json("txn", "list", "M1")[0]]
    assert member(cli, "M1")["balance"] == 25
    cli.check()


@freeze_time(NOW)
def test_enroll_is_idempotent_and_conflicts_on_other_data(deli: Cli) -> None:
    cli = deli
    cli("member", "enroll", "M1", "--name", "Ann", "--email", "ann@example.com")
    again = cli.json("member", "enroll", "M1", "--name", "Ann", "--email", "ann@example.com")
    assert again["duplicate"] is True
    conflict = cli("member", "enroll", "M1", "--name", "Bob", code=5)
    assert "M1" in conflict.stderr
    assert member(cli, "M1")["balance"] == 25
    cli.check()


@freeze_time(NOW)
def test_suspended_and_closed_members_cannot_earn_and_keep_their_balance(deli: Cli) -> None:
    cli = deli
    cli("member", "enroll", "M1")
    cli("member", "suspend", "M1", "--reason", "fraud review")
    cli("txn", "post", "M1", "--ref", "S1", "--amount", "10.00", code=6)
    assert member(cli, "M1")["status"] == "suspended"
    cli("member", "reactivate", "M1")
    cli("txn", "post", "M1", "--ref", "S1", "--amount", "10.00")
    cli("member", "close", "M1")
    cli("txn", "post", "M1", "--ref", "S2", "--amount", "10.00", code=6)
    cli("member", "reactivate", "M1", code=6)
    assert member(cli, "M1")["balance"] == 75
    assert [m["member"] for m in cli.json("member", "list", "--status", "closed")] == ["M1"]
    cli.check()


@freeze_time(NOW)
def test_erase_removes_personal_data_and_keeps_the_ledger(deli: Cli) -> None:
    cli = deli
    cli(
        "member",
        "enroll",
        "M1",
        "--name",
        "Ann Lee",
        "--email",
        "ann@example.com",
        "--phone",
        "+44 1234",
        "--birthday",
        "1990-04-01",
    )
    cli("txn", "post", "M1", "--ref", "E1", "--amount", "10.00")
    cli("member", "erase", "M1")
    shown = member(cli, "M1")
    assert shown["erased"] is True and shown["balance"] == 75
    text = cli("member", "show", "M1").stdout + cli("member", "list").stdout
    for secret in ("Ann Lee", "ann@example.com", "+44 1234", "1990-04-01"):
        assert secret not in text
        assert secret not in cli("member", "list", "--json").stdout
    cli.check()


@freeze_time(NOW)
def test_adjustments_credit_with_expiry_and_debit_oldest_first(deli: Cli) -> None:
    cli = deli
    cli("member", "enroll", "M1", "--at", "2026-01-05")
    plus = cli.json(
        "txn",
        "adjust",
        "M1",
        "--ref",
        "G1",
        "--points",
        "500",
        "--reason",
        "goodwill",
        "--at",
        "2026-03-01",
    )
    assert plus["balance"] == 525
    minus = cli.json("txn", "adjust", "M1", "--ref", "G2", "--points", "-100", "--reason", "fix")
    assert minus["balance"] == 425
    # The signup lot (2026-07-05) went first, then 75 of the goodwill lot (2026-09-01).
    assert member(cli, "M1")["expiring"] == [{"date": "2026-09-01", "points": 425}]
    cli("txn", "adjust", "M1", "--ref", "G3", "--points", "0", "--reason", "x", code=4)
    cli.check()
