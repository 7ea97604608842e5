"""Members at the counter: find, transfer, merge, how a transaction's points were worked
out, and who changed what. Figures are worked by hand in the comments; ``db check`` runs
after every scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
