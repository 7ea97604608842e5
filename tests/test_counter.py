"""Members at the counter: find, transfer, merge, how a transaction's points were worked
out, and who changed what. Figures are worked by hand in the comments; ``db check`` runs
after every scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from freezegun import freeze_time

from tests.conftest import Cli, write_program

# 10 points per unit, no bonus; lots expire 12 months after earning (not month-end);
# purchase points pending 3 days; points tiers in a rolling 12-month window.
PROGRAM = """
[program]
key = "shop"
name = "Shop"
currency = "USD"
timezone = "UTC"

[earn]
per_unit = 10
pending_days = 3
exclude = ["gift-cards"]

[earn.categories]
beans = 2.0

[[earn.promotions]]
name = "Double weekend"
from = 2025-03-01
to = 2025-03-02
multiplier = 2.0

[expiry]
policy = "rolling"
months = 12
month_end = false

[tiers]
metric = "points"
window = "rolling-12-months"
hold_months = 12

[[tiers.levels]]
key = "bronze"
min = 0
multiplier = 1.0

[[tiers.levels]]
key = "silver"
min = 1000
multiplier = 1.5

[[tiers.levels]]
key = "gold"
min = 3000
multiplier = 2.0

[[rewards]]
key = "mug"
name = "Mug"
cost = 200
valid_days = 3650
"""


def shop(cli: Cli, tmp_path: Path) -> Cli:
    cli("program", "load", str(write_program(tmp_path, PROGRAM)))
    return cli


def enroll(cli: Cli, code: str, *extra: str, at: str = "2025-01-01T10:00") -> None:
    cli("member", "enroll", code, "--at", at, *extra)


def buy(cli: Cli, member: str, ref: str, amount: str, at: str, *extra: str) -> dict[str, Any]:
    data: dict[str, Any] = cli.json(
        "txn", "post", member, "--ref", ref, "--amount", amount, "--at", at, *extra
    )
    return data


def show(cli: Cli, member: str) -> dict[str, Any]:
    data: dict[str, Any] = cli.json("member", "show", member)
    return data


# ---- member find -----------------------------------------------------------------------


def test_find_by_code_email_phone_and_name(cli: Cli, tmp_path: Path) -> None:
    shop(cli, tmp_path)
    enroll(cli, "M-1", "--name", "Ada Lovelace", "--email", "Ada@Example.com",
           "--phone", "5550100199")  # fmt: skip
    enroll(cli, "M-2", "--name", "Charles Babbage", "--phone", "+44 20 7946 0018")
    enroll(cli, "M-3", "--name", "Grace Hopper", "--email", "grace@example.com")

    def codes(text: str) -> list[str]:
        return [row["member"] for row in cli.json("member", "find", text)]

    assert codes("M-2") == ["M-2"]
    assert codes("ada@EXAMPLE.com") == ["M-1"]
    assert codes("+1 (555) 010-0199") == ["M-1"]  # a country code the stored one lacks
    assert codes("010-0199") == ["M-1"]  # the end of the number
    assert codes("020 7946 0018") == ["M-2"]  # trunk prefix instead of the country code
    assert codes("hop") == ["M-3"]
    assert codes("a") == ["M-1", "M-2", "M-3"]
    assert cli.json("member", "find", "nobody@example.com") == []
    row = cli.json("member", "find", "M-1")[0]
    assert row == {
        "member": "M-1", "name": "Ada Lovelace", "email": "Ada@Example.com",
        "phone": "5550100199", "status": "active", "tier": "bronze", "balance": 0,
    }  # fmt: skip
    # Changed details are found by their new values, not their old ones.
    cli("member", "update", "M-3", "--email", "G.Hopper@Navy.mil", "--phone", "555 777 1234")
    assert codes("g.hopper@navy.mil") == ["M-3"]
    assert codes("grace@example.com") == []
    assert codes("5557771234") == ["M-3"]
    # Erased: found by the code only, never by what was removed.
    cli("member", "erase", "M-1")
    assert codes("ada@example.com") == []
    assert codes("5550100199") == []
    assert codes("lovelace") == []
    assert [(r["member"], r["name"], r["email"]) for r in cli.json("member", "find", "M-1")] == [
        ("M-1", None, None)
    ]
    cli.check()


# ---- txn transfer ------------------------------------------------------------------------


def test_transfer_takes_available_points_oldest_expiring_first(cli: Cli, tmp_path: Path) -> None:
    with freeze_time("2026-06-01T12:00:00Z"):
        shop(cli, tmp_path)
        enroll(cli, "A")
        enroll(cli, "B")
        buy(cli, "A", "P1", "10.00", "2026-01-10T10:00")  # 100, expires 2027-01-10
        buy(cli, "A", "P2", "5.00", "2026-03-05T10:00")  # 50, expires 2027-03-05
        buy(cli, "A", "P3", "20.00", "2026-05-31T10:00")  # 200, pending until 2026-06-03
        a = show(cli, "A")
        assert (a["balance"], a["available"], a["pending"]) == (350, 150, 200)
        # Pending points cannot go: 150 available, not 200.
        refused = cli("txn", "transfer", "A", "B", "--points", "200", "--ref", "T0", code=6)
        assert "150 available points (200 more are pending)" in refused.stderr
        out = cli.json("txn", "transfer", "A", "B", "--points", "120", "--ref", "T1",
                       "--reason", "family")  # fmt: skip
        assert (out["member"], out["to"], out["points"], out["balance"]) == ("A", "B", -120, 230)
        assert (out["to_balance"], out["duplicate"], out["tier"]) == (120, False, "bronze")
        # 100 from the lot of 2027-01-10, then 20 from the one of 2027-03-05; same dates on B.
        b = show(cli, "B")
        assert b["balance"] == 120 and b["available"] == 120
        assert b["expiring"] == [
            {"date": "2027-01-10", "points": 100},
            {"date": "2027-03-05", "points": 20},
        ]
        assert b["qualifying"] == 0  # not qualifying activity
        assert show(cli, "A")["expiring"][:2] == [
            {"date": "2027-03-05", "points": 30},
            {"date": "2027-05-31", "points": 200},
        ]
        again = cli.json("txn", "transfer", "A", "B", "--points", "120", "--ref", "T1",
                         "--reason", "family")  # fmt: skip
        assert again["duplicate"] is True and again["balance"] == 230
        cli("txn", "transfer", "A", "B", "--points", "121", "--ref", "T1", code=5)
        cli("txn", "transfer", "A", "A", "--points", "1", "--ref", "T2", code=6)
        cli("txn", "transfer", "A", "NOBODY", "--points", "1", "--ref", "T2", code=3)
        cli.check()
    with freeze_time("2027-01-11T12:00:00Z"):
        done = cli.json("expire", "--as-of", "2027-01-10")
        assert (done["members"], done["points_expired"]) == (1, 100)  # B's moved lot only
        assert show(cli, "B")["balance"] == 20
        assert show(cli, "A")["balance"] == 230
        cli.check()
