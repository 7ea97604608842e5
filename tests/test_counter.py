"""Members at the counter: find, transfer, merge, how a transaction's points were worked
out, and who changed what. Figures are worked by hand in the comments; ``db check`` runs
after every scenario."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from tests.conftest import REPO, Cli, write_program

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


@pytest.mark.partitioned
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


@pytest.mark.partitioned
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


# ---- member merge --------------------------------------------------------------------------


@pytest.mark.partitioned
def test_merge_moves_lots_with_their_dates_then_expiry_takes_them_on_those_dates(
    cli: Cli, tmp_path: Path
) -> None:
    with freeze_time("2026-06-01T12:00:00Z"):
        shop(cli, tmp_path)
        enroll(cli, "S")
        enroll(cli, "T")
        buy(cli, "S", "S1", "10.00", "2025-07-01T10:00")  # 100, expires 2026-07-01
        buy(cli, "S", "S2", "20.00", "2025-12-15T10:00")  # 200, expires 2026-12-15
        buy(cli, "T", "T1", "30.00", "2026-02-01T10:00")  # 300, expires 2027-02-01
        out = cli.json("member", "merge", "S", "T", "--ref", "MG1")
        assert out == {
            "ref": "MG1", "source": "S", "target": "T", "points_moved": 300,
            "balance": 600, "tier": "bronze", "duplicate": False,
        }  # fmt: skip
        t = show(cli, "T")
        assert t["expiring"] == [
            {"date": "2026-07-01", "points": 100},
            {"date": "2026-12-15", "points": 200},
            {"date": "2027-02-01", "points": 300},
        ]
        assert t["qualifying"] == 600  # S's activity counts in T's window where it happened
        s = show(cli, "S")
        assert (s["status"], s["balance"], s["expiring"]) == ("merged", 0, [])
        # Statements of both show the move.
        s_lines = cli.json("statement", "S", "--from", "2026-06-01", "--to", "2026-06-01",
                           "--format", "json")["lines"]  # fmt: skip
        assert [(line["ref"], line["points"]) for line in s_lines] == [("MG1", -300)]
        t_lines = cli.json("statement", "T", "--from", "2026-06-01", "--to", "2026-06-01",
                           "--format", "json")["lines"]  # fmt: skip
        assert [(line["ref"], line["points"]) for line in t_lines] == [("merge-in:MG1", 300)]
        # A retry reports the original result; the same ref for another merge conflicts.
        again = cli.json("member", "merge", "S", "T", "--ref", "MG1")
        assert again == {**out, "duplicate": True}
        cli("member", "merge", "T", "S", "--ref", "MG1", code=5)
        # A merged member can neither earn, redeem nor receive, nor be merged again.
        cli("txn", "post", "S", "--ref", "X1", "--amount", "5.00", code=6)
        cli("txn", "adjust", "S", "--ref", "X2", "--points", "10", "--reason", "x", code=6)
        cli("reward", "redeem", "S", "mug", code=6)
        cli("txn", "transfer", "T", "S", "--points", "10", "--ref", "X3", code=6)
        cli("member", "merge", "S", "T", "--ref", "MG2", code=6)
        cli("member", "merge", "T", "T", "--ref", "MG3", code=6)
        cli.check()
    with freeze_time("2026-07-02T12:00:00Z"):
        done = cli.json("expire", "--as-of", "2026-07-01")
        assert (done["members"], done["points_expired"]) == (1, 100)
        assert show(cli, "T")["balance"] == 500
        cli.check()
    with freeze_time("2026-12-16T12:00:00Z"):
        done = cli.json("expire", "--as-of", "2026-12-15")
        assert (done["members"], done["points_expired"]) == (1, 200)
        assert show(cli, "T")["balance"] == 300
        assert show(cli, "S")["balance"] == 0
        cli.check()


@pytest.mark.partitioned
@pytest.mark.partitioned
def test_merge_of_a_gold_and_a_bronze_member_with_vouchers_and_debt(
    cli: Cli, tmp_path: Path
) -> None:
    with freeze_time("2026-06-01T12:00:00Z"):
        shop(cli, tmp_path)
        enroll(cli, "G")
        enroll(cli, "B")
        buy(cli, "G", "G1", "300.00", "2026-01-10T10:00")  # 3000 at bronze x1: up to gold
        assert show(cli, "G")["tier"] == "gold"
        buy(cli, "B", "B1", "50.00", "2026-02-01T10:00")  # 500
        mine = cli.json("reward", "redeem", "B", "mug")["voucher"]  # B: 300
        moved = cli.json("reward", "redeem", "G", "mug")["voucher"]  # G: 2800
        # Gold source into a bronze target: the target takes the higher tier.
        out = cli.json("member", "merge", "G", "B", "--ref", "MG1")
        assert (out["points_moved"], out["balance"], out["tier"]) == (2800, 3100, "gold")
        b = show(cli, "B")
        assert b["tier_history"][-1]["tier"] == "gold"
        assert b["tier_history"][-1]["reason"] == "merge"
        assert b["qualifying"] == 3500  # 3000 + 500
        cli.check()
        # G's live voucher is B's now: cancelling it gives the points back to B.
        cancelled = cli.json("reward", "cancel", moved)
        assert cancelled["member"] == "B" and cancelled["balance"] == 3300
        cli.json("reward", "cancel", mine)
        assert show(cli, "B")["balance"] == 3500
        assert show(cli, "G")["balance"] == 0
        cli.check()


@pytest.mark.partitioned
def test_merge_carries_the_source_debt(cli: Cli, tmp_path: Path) -> None:
    with freeze_time("2026-06-01T12:00:00Z"):
        shop(cli, tmp_path)
        enroll(cli, "S")
        enroll(cli, "T")
        buy(cli, "S", "S1", "30.00", "2026-01-10T10:00")  # 300
        cli.json("reward", "redeem", "S", "mug")  # S: 100
        cli("txn", "return", "S", "--ref", "R1", "--original", "S1", "--amount", "30.00")
        s = show(cli, "S")
        assert (s["balance"], s["debt"]) == (-200, 200)
        buy(cli, "T", "T1", "50.00", "2026-02-01T10:00")  # 500
        out = cli.json("member", "merge", "S", "T", "--ref", "MG1")
        assert (out["points_moved"], out["balance"]) == (-200, 300)
        t = show(cli, "T")
        assert (t["balance"], t["debt"]) == (300, 200)  # 500 in lots less the debt
        s = show(cli, "S")
        assert (s["balance"], s["debt"]) == (0, 0)
        cli.check()
        buy(cli, "T", "T2", "10.00", "2026-05-01T10:00")  # 100 pays debt first
        t = show(cli, "T")
        assert (t["balance"], t["debt"]) == (400, 100)
        cli.check()


def test_merge_racing_purchases_on_the_source_loses_nothing(
    cli: Cli, db_url: str, tmp_path: Path
) -> None:
    shop(cli, tmp_path)
    enroll(cli, "S")
    enroll(cli, "T")
    exe = Path(sys.executable).parent
    env = {"LOYALTYCTL_DB": db_url, "PATH": f"{exe}:/usr/bin:/bin", "LOYALTYCTL_BUSY_TIMEOUT": "60"}
    count = 6
    posts = "\n".join(
        f'loyaltyctl txn post S --ref P{i} --amount 10.00 >/dev/null 2>&1; echo "rc $?"'
        for i in range(count)
    )
    poster = subprocess.Popen(["bash", "-c", posts], env=env, stdout=subprocess.PIPE, text=True)
    merger = subprocess.Popen(
        ["bash", "-c", "sleep 1.5; loyaltyctl member merge S T --ref MG1 --json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    posted, _ = poster.communicate(timeout=300)
    merged, err = merger.communicate(timeout=300)
    assert merger.returncode == 0, err
    codes = [int(line.split()[1]) for line in posted.splitlines()]
    assert set(codes) <= {0, 6}, codes  # each purchase landed before the merge, or was refused
    landed = codes.count(0)
    # Every purchase that landed is on T (100 points each, pending ones too); none on S.
    assert json.loads(merged)["points_moved"] == 100 * landed
    assert show(cli, "S")["balance"] == 0
    assert show(cli, "T")["balance"] == 100 * landed
    assert codes == sorted(codes)  # once refused, always refused
    cli.check()


# ---- audit ---------------------------------------------------------------------------------


@pytest.mark.partitioned
def test_every_write_command_is_in_the_audit_with_its_actor(
    cli: Cli, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("LOYALTYCTL_ACTOR", "till-7")
    members_csv = tmp_path / "members.csv"
    members_csv.write_text(
        "member,name,enrolled_at\nI1,Imported One,2026-01-01\n", encoding="utf-8"
    )
    txns_csv = tmp_path / "txns.csv"
    txns_csv.write_text("member,ref,amount,at\nI1,IP1,4.00,2026-05-02T10:00\n", encoding="utf-8")

    def audited(command: str) -> list[dict[str, Any]]:
        rows = [r for r in cli.json("audit", "list") if r["command"] == command]
        assert rows, f"{command} is not in the audit"
        return rows

    with freeze_time("2026-06-01T12:00:00Z"):
        steps: list[tuple[str, list[str]]] = [
            ("program load", ["program", "load", str(write_program(tmp_path, PROGRAM))]),
            ("member enroll", ["member", "enroll", "A", "--at", "2026-01-01T10:00"]),
            ("member enroll", ["member", "enroll", "B", "--at", "2026-01-01T10:00"]),
            ("member update", ["member", "update", "A", "--email", "a@example.com"]),
            ("member import", ["member", "import", str(members_csv)]),
            ("txn post", ["txn", "post", "A", "--ref", "P1", "--amount", "50.00",
                          "--at", "2026-05-01T10:00"]),
            ("txn import", ["txn", "import", str(txns_csv)]),
            ("txn return", ["txn", "return", "A", "--ref", "R1", "--original", "P1",
                            "--amount", "10.00"]),
            ("txn adjust", ["txn", "adjust", "A", "--ref", "J1", "--points", "5",
                            "--reason", "goodwill"]),
            ("txn transfer", ["txn", "transfer", "A", "B", "--points", "400", "--ref", "T1"]),
            ("member suspend", ["member", "suspend", "B", "--reason", "called about Mrs X"]),
            ("member reactivate", ["member", "reactivate", "B"]),
            ("expire", ["expire", "--as-of", "2026-05-31"]),
            ("tiers review", ["tiers", "review", "--as-of", "2026-05-31"]),
            ("nightly", ["nightly", "--as-of", "2026-06-01"]),
            ("member merge", ["member", "merge", "I1", "A", "--ref", "MG1"]),
            ("member close", ["member", "close", "A"]),
        ]  # fmt: skip
        for name, args in steps:
            cli(*args)
            assert all(r["actor"] == "till-7" for r in audited(name))
        voucher = cli.json("--actor", "alice", "reward", "redeem", "B", "mug")["voucher"]
        assert audited("reward redeem")[0]["actor"] == "alice"
        assert audited("reward redeem")[0]["member"] == "B"
        cli("reward", "use", voucher)
        audited("reward use")
        voucher = cli.json("reward", "redeem", "B", "mug")["voucher"]
        cli("reward", "cancel", voucher)
        audited("reward cancel")
        post = audited("txn post")[0]
        assert (post["member"], post["ref"], post["summary"]) == ("A", "P1", "purchase +500 points")
        # Both sides of a merge and of a transfer.
        assert {r["member"] for r in audited("member merge")} == {"I1", "A"}
        assert {r["ref"] for r in audited("txn transfer")} == {"T1", "transfer-in:T1"}
        # An identical retry changes nothing, and so records nothing.
        before = len(cli.json("audit", "list"))
        cli("txn", "post", "A", "--ref", "P1", "--amount", "50.00", "--at", "2026-05-01T10:00")
        cli("member", "enroll", "B", "--at", "2026-01-01T10:00")
        assert len(cli.json("audit", "list")) == before
        # A member's own lines; erasure takes what was typed about it out of the audit.
        mine = cli.json("audit", "list", "--member", "B")
        assert any("Mrs X" in r["summary"] for r in mine)
        cli("member", "erase", "B")
        mine = cli.json("audit", "list", "--member", "B")
        assert not any("Mrs X" in r["summary"] for r in mine)
        assert mine[-1]["command"] == "member erase"
        assert cli.json("audit", "list", "--since", "2026-06-02T00:00") == []
        assert len(cli.json("audit", "list", "--since", "2026-06-01T00:00")) == before + 1
        cli.check()


def test_a_merge_is_one_member_merged_event(cli: Cli, tmp_path: Path) -> None:
    """The feed tells a merge as member.merged for the source, not as two txn.posted."""
    cli("program", "load", str(REPO / "programs" / "coffee.toml"))
    cli("member", "enroll", "A", "--at", "2026-01-02")
    cli("member", "enroll", "B", "--at", "2026-01-03")
    cli("txn", "post", "B", "--ref", "P1", "--amount", "20", "--at", "2026-02-02")
    cli("member", "merge", "B", "A", "--ref", "MG1")
    found = [json.loads(line) for line in cli("events", "list", "--json").stdout.splitlines()]
    merged = [e for e in found if e["type"] == "member.merged"]
    assert [(e["member"], e["data"]["into"], e["data"]["points_moved"]) for e in merged] == [
        ("B", "A", 300)
    ]
    assert not [e for e in found if e["type"] == "txn.posted" and e["data"]["kind"] == "merge"]
    cli.check()
