"""The event feed: events written with their changes, in order, once; consumers' cursors,
--exec deliveries and concurrent pulls; till files with stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import REPO, Cli, write_program

PROGRAM = """
[program]
key = "cafe"
name = "Cafe"
currency = "USD"
timezone = "America/New_York"

[earn]
per_unit = 10
signup_bonus = 100

[expiry]
policy = "rolling"
months = 6

[tiers]
metric = "points"
window = "rolling-12-months"

[[tiers.levels]]
key = "green"
min = 0

[[tiers.levels]]
key = "gold"
min = 500

[[rewards]]
key = "coffee"
name = "Free coffee"
cost = 100
valid_days = 30
kind = "free-product"
product = "coffee"
"""


def events(cli: Cli, *args: str) -> list[dict[str, Any]]:
    out = cli("events", "list", "--json", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def pull(cli: Cli, consumer: str, *args: str, code: int = 0) -> list[dict[str, Any]]:
    out = cli("events", "pull", consumer, "--json", *args, code=code).stdout
    return [json.loads(line) for line in out.splitlines()]


def scenario(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, PROGRAM)))
    cli("member", "enroll", "M1", "--email", "m1@example.com", "--at", "2026-01-05T10:00")
    cli("txn", "post", "M1", "--ref", "P1", "--amount", "20", "--at", "2026-01-10T10:00")
    cli("txn", "post", "M1", "--ref", "P2", "--amount", "30", "--at", "2026-03-01T10:00")
    v1 = cli.json("reward", "redeem", "M1", "coffee", "--at", "2026-03-02T10:00")["voucher"]
    cli("reward", "use", v1, "--at", "2026-03-03T10:00")
    v2 = cli.json("reward", "redeem", "M1", "coffee", "--at", "2026-03-04T10:00")["voucher"]
    cli("reward", "cancel", v2, "--at", "2026-03-05T10:00")
    cli("nightly", "--as-of", "2026-07-11", "--within", "60d")


def test_a_scenario_writes_exactly_its_events_in_order(cli: Cli, tmp_path: Path) -> None:
    scenario(cli, tmp_path)
    # Again for the same day, and the next day: no second points.expiring for 2026-09-01.
    cli("nightly", "--as-of", "2026-07-11", "--within", "60d")
    cli("nightly", "--as-of", "2026-07-12", "--within", "60d")
    cli("member", "erase", "M1")
    found = events(cli)
    assert [(e["type"], e["member"]) for e in found] == [
        ("member.enrolled", "M1"),
        ("txn.posted", "M1"),  # the signup bonus
        ("txn.posted", "M1"),
        ("txn.posted", "M1"),
        ("member.tier_changed", "M1"),
        ("voucher.issued", "M1"),
        ("voucher.used", "M1"),
        ("voucher.issued", "M1"),
        ("voucher.cancelled", "M1"),
        ("points.expired", "M1"),
        ("points.expiring", "M1"),
        ("member.erased", "M1"),
    ]
    ids = [e["id"] for e in found]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    data = [e["data"] for e in found]
    assert data[0]["tier"] == "green"
    assert data[1]["kind"] == "bonus" and data[1]["points"] == 100
    assert data[2] == {
        "amount": "20.00",
        "at": "2026-01-10T15:00:00+00:00",
        "balance": 300,
        "kind": "purchase",
        "points": 200,
        "ref": "P1",
        "store": None,
        "tier": "green",
    }
    assert data[4] == {"effective_on": "2026-03-01", "reason": "upgrade", "tier": "gold"}
    assert data[5]["reward"] == "coffee" and data[5]["points"] == 100
    assert data[6]["voucher"] == data[5]["voucher"]
    assert data[8]["voucher"] == data[7]["voucher"]
    # The bonus lot paid the first voucher; the cancelled one's points went back to P1's
    # lot, which ends on 2026-07-10.
    assert data[9] == {"as_of": "2026-07-11", "points": 200}
    assert data[10] == {"expires_on": "2026-09-01", "points": 300}
    assert all(e["program"] == "cafe" for e in found)
    # Never personal data.
    assert "m1@example.com" not in cli("events", "list", "--json").stdout
    assert [e["type"] for e in events(cli, "--type", "points.expiring")] == ["points.expiring"]
    assert [e["id"] for e in events(cli, "--after", str(ids[9]), "--limit", "1")] == [ids[10]]
    assert "unknown event type" in cli("events", "list", "--type", "nope", code=4).stderr
    cli.check()


def test_a_failed_delivery_comes_again_and_the_earlier_ones_never(cli: Cli, tmp_path: Path) -> None:
    scenario(cli, tmp_path)
    log = tmp_path / "got.jsonl"
    # Fails on the third event it is given.
    script = f"cat >> {log}; test $(wc -l < {log}) -lt 3"
    first = pull(cli, "mailer", "--exec", script, code=9)
    got = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["id"] for e in first] == [e["id"] for e in got[:2]]
    third = got[2]["id"]
    log.write_text("")
    second = pull(cli, "mailer", "--exec", f"cat >> {log}")
    again = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    assert again[0] == third and again == [e["id"] for e in second]
    assert not {e["id"] for e in first} & set(again)
    assert pull(cli, "mailer") == []
    # Another consumer has its own cursor.
    assert [e["id"] for e in pull(cli, "crm", "--limit", "3")] == [e["id"] for e in got[:3]]


def test_two_pulls_at_once_deliver_each_event_once(cli: Cli, tmp_path: Path) -> None:
    scenario(cli, tmp_path)
    for i in range(20):
        cli("txn", "post", "M1", "--ref", f"X{i}", "--amount", "1", "--at", "2026-07-20T10:00")
    total = len(events(cli))
    log = tmp_path / "both.jsonl"
    # Slow deliveries, so the two pulls overlap.
    command = f"cat >> {log}; sleep 0.05"
    env = {**os.environ, "LOYALTYCTL_BUSY_TIMEOUT": "60"}
    args = [sys.executable, "-m", "loyaltyctl", "--db", cli.db, "events", "pull", "mailer"]
    procs = [
        subprocess.Popen(
            [*args, "--exec", command], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    delivered = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    assert len(delivered) == total and len(set(delivered)) == total
    assert delivered == sorted(delivered)


def _import(db: str, path: Path, env: dict[str, str], *extra: str) -> Any:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "loyaltyctl",
            "--db",
            db,
            "txn",
            "import",
            str(path),
            "--json",
            *extra,
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
        timeout=120,
    )


def _in_step(db: str) -> tuple[int, int]:
    engine = create_engine(db)
    with engine.connect() as conn:
        txns = conn.execute(text("SELECT COUNT(*) FROM txn")).scalar_one()
        posted = conn.execute(
            text("SELECT COUNT(*) FROM event WHERE type = 'txn.posted'")
        ).scalar_one()
    engine.dispose()
    return txns, posted


@pytest.mark.parametrize("with_rejects", [True, False])
def test_a_killed_import_leaves_events_and_ledger_in_step(
    cli: Cli, tmp_path: Path, with_rejects: bool
) -> None:
    cli("program", "load", str(write_program(tmp_path, PROGRAM)))
    cli("member", "enroll", "M1", "--at", "2026-01-05T10:00")
    cli("member", "enroll", "M2", "--at", "2026-01-05T10:00")
    path = tmp_path / "till.csv"
    rows = [f"M{1 + i % 2},T{i},{1 + i % 7}.50,2026-02-{1 + i % 27:02d}T12:00" for i in range(80)]
    path.write_text("member,ref,amount,at\n" + "\n".join(rows) + "\n", encoding="utf-8")
    env = {"LOYALTYCTL_IMPORT_BATCH_ROWS": "10"}
    # With a rejects file each batch commits on its own; without, the file is one
    # transaction.
    extra = ("--rejects", str(tmp_path / "bad.csv")) if with_rejects else ()
    killed = _import(cli.db, path, {**env, "LOYALTYCTL_TEST_DIE_AFTER_BATCHES": "3"}, *extra)
    assert killed.returncode == -9
    txns, posted = _in_step(cli.db)
    assert txns == posted == 2 + (30 if with_rejects else 0)
    done = _import(cli.db, path, env, *extra)
    assert done.returncode == 0, done.stderr
    txns, posted = _in_step(cli.db)
    assert txns == posted == 2 + 80
    refs = [e["data"]["ref"] for e in events(cli, "--type", "txn.posted")]
    assert refs == ["signup:M1", "signup:M2", *[f"T{i}" for i in range(80)]]
    cli.check()


def test_a_till_file_with_stores_and_semicolons(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, PROGRAM)))
    for code in ("M1", "M2"):
        cli("member", "enroll", code, "--at", "2026-01-05T10:00")
    path = tmp_path / "till.csv"
    path.write_text(
        "Kunde;Beleg;Betrag;Zeit;Filiale;Kasse\n"
        "M1;B1;10.00;2026-02-01T09:00;north;3\n"
        "M2;B2;20.50;2026-02-01T10:00;south;1\n"
        "M1;B3;5.25;2026-02-02T11:00;north;2\n"
        "M2;B4;7.00;2026-02-03T12:00;;1\n",
        encoding="utf-8",
    )
    maps = ["Kunde=member", "Beleg=ref", "Betrag=amount", "Zeit=at", "Filiale=store"]
    args = [a for m in maps for a in ("--map", m)]
    result = cli.json("txn", "import", str(path), *args, "--ignore", "Kasse")
    assert result["applied"] == 4 and result["rejected"] == 0
    cli("txn", "post", "M1", "--ref", "B5", "--amount", "4", "--at", "2026-02-04T10:00",
        "--store", "south")  # fmt: skip
    cli("txn", "return", "M1", "--ref", "R1", "--original", "B1", "--amount", "5",
        "--at", "2026-02-05T10:00")  # fmt: skip
    report = cli.json(
        "report", "summary", "--from", "2026-02-01", "--to", "2026-02-28", "--by", "store"
    )
    # Worked by hand: 10 points per unit, rounded down.
    # north: B1 10.00 → 100, B3 5.25 → 52; south: B2 20.50 → 205, B5 4.00 → 40;
    # none: B4 7.00 → 70, and the return R1 (half of B1 → 50 points back, no store).
    assert report["stores"] == [
        {
            "store": "north", "purchases": 2, "sales": "15.25", "returns": 0,
            "returned": "0.00", "points_earned": 152, "points_clawed_back": 0, "members": 1,
        },
        {
            "store": "south", "purchases": 2, "sales": "24.50", "returns": 0,
            "returned": "0.00", "points_earned": 245, "points_clawed_back": 0, "members": 2,
        },
        {
            "store": None, "purchases": 1, "sales": "7.00", "returns": 1,
            "returned": "5.00", "points_earned": 70, "points_clawed_back": 50, "members": 2,
        },
    ]  # fmt: skip
    assert "stores" not in cli.json("report", "summary")
    posted = {e["data"]["ref"]: e["data"]["store"] for e in events(cli, "--type", "txn.posted")}
    assert posted["B1"] == "north" and posted["B4"] is None and posted["B5"] == "south"
    statement = cli.json(
        "statement", "M1", "--from", "2026-02-01", "--to", "2026-02-28", "--format", "json"
    )
    assert [(line["ref"], line["store"]) for line in statement["lines"]] == [
        ("B1", "north"),
        ("B3", "north"),
        ("B5", "south"),
        ("R1", None),
    ]
    # A tab-separated file, and a --map to a field nobody knows.
    tabbed = tmp_path / "tabs.csv"
    tabbed.write_text("member\tref\tamount\tstore\nM2\tB9\t1.00\teast\n", encoding="utf-8")
    assert cli.json("txn", "import", str(tabbed))["applied"] == 1
    bad = cli("txn", "import", str(path), "--map", "Kunde=customer", code=4)
    assert "'customer' is not a column of txn import" in bad.stderr
    cli.check()
