"""`member import` and `txn import`: the same ledger as posting row by row, rejects, all or
nothing, idempotent re-runs, and a SIGKILLed import re-run to exactly once."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer.main
from freezegun import freeze_time
from sqlalchemy import create_engine, text

from loyaltyctl.cli.main import app
from loyaltyctl.ledger.kernel import purchase_payload_text
from tests.conftest import REPO, Cli, write_program

CAFE = """
[program]
key = "cafe"
name = "Cafe"
currency = "USD"
timezone = "America/New_York"

[earn]
per_unit = 10
exclude = ["gift-cards"]
signup_bonus = 100
pending_days = 3
allow_negative = true
bonus_qualifies = true

[earn.categories]
beans = 2.0

[[earn.promotions]]
name = "Double"
from = 2026-03-07
to = 2026-03-08
multiplier = 2.0

[expiry]
policy = "rolling"
months = 6
month_end = true

[tiers]
metric = "points"
window = "rolling-12-months"

[[tiers.levels]]
key = "green"
min = 0

[[tiers.levels]]
key = "gold"
min = 1500
multiplier = 1.5

[[tiers.levels]]
key = "black"
min = 4000
multiplier = 2.0
"""

SHOP = """
[program]
key = "shop"
name = "Shop"
currency = "EUR"
timezone = "Europe/Berlin"

[earn]
per_unit = 1
rounding = "half-up"
exclude = ["tobacco"]
signup_bonus = 50
allow_negative = false

[earn.categories]
own-brand = 2.0

[expiry]
policy = "fixed_date"
day = "12-31"

[tiers]
metric = "spend"
window = "calendar-year"

[[tiers.levels]]
key = "member"
min = 0

[[tiers.levels]]
key = "plus"
min = 150
multiplier = 1.25

[[tiers.levels]]
key = "premium"
min = "400.50"
multiplier = 1.5
"""

AIR = """
[program]
key = "air"
name = "Air"
currency = "JPY"
timezone = "Asia/Tokyo"

[earn]
per_unit = "0.1"
rounding = "ceil"

[expiry]
policy = "inactivity"
months = 18

[tiers]
metric = "visits"
window = "rolling-12-months"

[[tiers.levels]]
key = "blue"
min = 0

[[tiers.levels]]
key = "silver"
min = 4
multiplier = 1.5
"""

PROGRAMS = {"cafe": CAFE, "shop": SHOP, "air": AIR}
MEMBERS = ["M1", "M2", "M3", "M4", "M5", "M6"]
COLUMNS = ["type", "member", "ref", "amount", "at", "category", "original", "points", "reason"]

_twins = itertools.count()


@pytest.fixture
def twin(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cli]:
    """A second fresh database of the same backend, to post the same rows one by one."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "twin.db"
        shutil.copy(template, path)
        yield Cli(f"sqlite:///{path}")
        return
    cluster = request.getfixturevalue("pg_cluster")
    name = f"twin_{os.getpid()}_{next(_twins)}"
    admin = create_engine(cluster.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE loyaltyctl_template"))
    yield Cli(cluster.url(name))
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] = COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: v for k, v in row.items() if k in columns})
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def mixed_rows(seed: int, digits: int) -> list[dict[str, Any]]:
    """Purchases, returns and adjustments over a year, with every kind of bad row: unknown
    members, over-returns, conflicting and repeated refs, a return before its purchase,
    debts, and a suspended member."""
    rnd = random.Random(seed)
    rows: list[dict[str, Any]] = []
    purchases: list[dict[str, Any]] = []
    moment = datetime(2026, 1, 5, 9, 0)
    unit = 10**-digits
    for i in range(64):
        moment += timedelta(hours=rnd.randrange(1, 90))
        when = moment
        if rnd.random() < 0.1:  # posted late, dated earlier
            when = moment - timedelta(days=rnd.randrange(1, 40))
        at = when.strftime("%Y-%m-%dT%H:%M")
        member = rnd.choice(MEMBERS)
        roll = rnd.random()
        if roll < 0.55 or not purchases:
            amount = round(rnd.uniform(0.5, 120), digits) if digits else rnd.randrange(100, 12000)
            row = {
                "member": member,
                "ref": f"P{i}",
                "amount": f"{amount:.{digits}f}",
                "at": at,
                "category": rnd.choice(["", "", "beans", "gift-cards", "own-brand", "tobacco"]),
            }
            if rnd.random() < 0.5:
                row["type"] = "purchase"
            purchases.append(row)
        elif roll < 0.75:
            original = rnd.choice(purchases[-12:])
            full = float(original["amount"])
            part = rnd.choice([full, full / 2, full / 3, full * 0.9, full + 1])
            part = max(round(part, digits), unit) if digits else max(int(part), 1)
            row = {
                "type": "return",
                "member": original["member"] if rnd.random() < 0.9 else member,
                "ref": f"R{i}",
                "amount": f"{part:.{digits}f}",
                "at": at if rnd.random() < 0.9 else "2026-01-01T00:00",
                "original": original["ref"],
            }
        elif roll < 0.9:
            points = rnd.choice([50, 200, -30, -150, -900, 1200])
            row = {
                "type": "adjust",
                "member": member,
                "ref": f"A{i}",
                "points": str(points),
                "at": at,
                "reason": rnd.choice(["goodwill", "correction, manual", 'said "sorry"']),
            }
        elif roll < 0.94:
            row = dict(rnd.choice(rows))  # an identical repeat: a duplicate
        elif roll < 0.97:
            row = dict(rnd.choice(purchases))
            row["amount"] = "1.00" if digits else "100"  # same ref, other data: a conflict
        else:
            row = {"member": "NOBODY", "ref": f"X{i}", "amount": "5", "at": at}
        rows.append(row)
    rows.append(
        {
            "type": "return",
            "member": "M1",
            "ref": "R-early",
            "amount": "1",
            "original": "P-later",
            "at": "2026-06-01T10:00",
        }
    )
    rows.append({"member": "M1", "ref": "P-later", "amount": "3", "at": "2026-06-02T10:00"})
    rows.append({"member": "M6", "ref": "P-suspended", "amount": "10", "at": "2026-06-03T10:00"})
    rows.append(
        {
            "type": "adjust",
            "member": "M1",
            "ref": "A-zero",
            "points": "0",
            "reason": "x",
            "at": "2026-06-03T10:00",
        }
    )
    return rows


@functools.cache
def _command() -> Any:
    return typer.main.get_command(app)


def run(db: str, *args: str) -> tuple[int, str]:
    """``loyaltyctl --db DB ARGS`` in-process: exit code and stdout. The command tree is
    built once (CliRunner builds it on every call, the bulk of a call's time)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            code = _command().main(
                ["--db", db, *args], prog_name="loyaltyctl", standalone_mode=False
            )
        except Exception as exc:  # usage errors are raised when not standalone
            code = getattr(exc, "exit_code", 1)
    return (code if isinstance(code, int) else 0), out.getvalue()


def post_one(cli: Cli, row: dict[str, Any]) -> int:
    """Post one row with `txn post|return|adjust`; the exit code."""
    kind = row.get("type") or "purchase"
    common = ["--ref", row["ref"], "--at", row["at"]]
    if kind == "purchase":
        args = ["txn", "post", row["member"], "--amount", row["amount"], *common]
        if row.get("category"):
            args += ["--category", row["category"]]
    elif kind == "return":
        args = [
            "txn",
            "return",
            row["member"],
            "--original",
            row["original"],
            "--amount",
            row["amount"],
            *common,
        ]
    else:
        args = [
            "txn",
            "adjust",
            row["member"],
            "--points",
            row["points"],
            "--reason",
            row["reason"],
            *common,
        ]
    return run(cli.db, *args)[0]


def enroll_all(cli: Cli, program: str, tmp_path: Path) -> None:
    path = write_program(tmp_path, PROGRAMS[program], f"{program}.toml")
    assert run(cli.db, "program", "load", str(path))[0] == 0
    for i, member in enumerate(MEMBERS):
        assert run(cli.db, "member", "enroll", member, "--at", f"2026-01-0{1 + i % 3}")[0] == 0
    assert run(cli.db, "member", "suspend", "M6")[0] == 0


def dump(cli: Cli) -> dict[str, list[Any]]:
    """Every ledger row, by content rather than by id (and without recorded_at)."""
    engine = create_engine(cli.db.replace("postgresql://", "postgresql+psycopg://"))
    queries = {
        "txn": """SELECT t.ref, m.code, t.kind, t.occurred_at, t.amount_minor, t.payload,
                  t.points, t.balance_after, t.tier_after, o.ref, t.reason, t.qual_points,
                  t.qual_spend_minor, t.qual_visits, t.qual_at, t.program_version_id
                  FROM txn t JOIN member m ON m.id = t.member_id
                  LEFT JOIN txn o ON o.id = t.original_id ORDER BY t.id""",
        "lot": """SELECT t.ref, l.kind, l.earned_at, l.available_at, l.expires_on, l.points,
                  l.remaining FROM points_lot l JOIN txn t ON t.id = l.txn_id ORDER BY l.id""",
        "entry": """SELECT m.code, t.ref, lt.ref, e.kind, e.points, e.at, e.program_version_id
                    FROM points_entry e JOIN member m ON m.id = e.member_id
                    JOIN txn t ON t.id = e.txn_id
                    LEFT JOIN points_lot l ON l.id = e.lot_id
                    LEFT JOIN txn lt ON lt.id = l.txn_id ORDER BY e.id""",
        "member": """SELECT code, status, tier, tier_since, balance, debt, last_purchase_at,
                     enrolled_at, name, email, phone, birthday FROM member ORDER BY code""",
    }
    with engine.connect() as conn:
        out = {
            name: [tuple(row) for row in conn.execute(text(sql))] for name, sql in queries.items()
        }
    engine.dispose()
    return out


SHOW_AND_LIST = (("member", "show"), ("txn", "list"))


def views(cli: Cli) -> dict[str, Any]:
    """`member show --json` and `txn list --json` of every member."""
    return {
        code: tuple(json.loads(run(cli.db, *cmd, code, "--json")[1]) for cmd in SHOW_AND_LIST)
        for code in MEMBERS
    }


@pytest.mark.parametrize("program", ["cafe", "shop", "air"])
def test_mixed_file_gives_the_ledger_of_posting_row_by_row(
    cli: Cli, twin: Cli, program: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digits = {"cafe": 2, "shop": 2, "air": 0}[program]
    rows = mixed_rows(seed=len(program), digits=digits)
    for db in (cli, twin):
        enroll_all(db, program, tmp_path)
    failed = {line for line, row in enumerate(rows, 2) if post_one(twin, row) != 0}
    assert 4 < len(failed) < len(rows) // 2

    # Batches of 7 rows: returns, duplicates and conflicts meet rows of earlier batches.
    monkeypatch.setenv("LOYALTYCTL_IMPORT_BATCH_ROWS", "7")
    path = write_csv(tmp_path / "mixed.csv", rows)
    summary = cli.json("txn", "import", str(path), "--rejects", str(tmp_path / "bad.csv"))
    with (tmp_path / "bad.csv").open(newline="") as fh:
        rejected = {int(r["line"]) for r in csv.DictReader(fh)}
    assert rejected == failed
    assert summary["rows"] == len(rows)
    assert summary["rejected"] == len(failed)
    assert summary["applied"] + summary["duplicates"] + summary["rejected"] == len(rows)

    assert views(cli) == views(twin)
    assert dump(cli) == dump(twin)
    cli.check()
    twin.check()


@pytest.mark.partitioned
def test_one_transaction_import_matches_too(
    cli: Cli, twin: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The good rows alone, without --rejects (one transaction over several batches, which
    keeps member rows between batches), give the ledger the whole file gave with --rejects
    (a transaction per batch)."""
    rows = mixed_rows(seed=9, digits=2)
    for db in (cli, twin):
        enroll_all(db, "cafe", tmp_path)
    monkeypatch.setenv("LOYALTYCTL_IMPORT_BATCH_ROWS", "7")
    cli.json(
        "txn",
        "import",
        str(write_csv(tmp_path / "all.csv", rows)),
        "--rejects",
        str(tmp_path / "bad.csv"),
    )
    with (tmp_path / "bad.csv").open(newline="") as fh:
        bad = {int(r["line"]) for r in csv.DictReader(fh)}
    good = [row for line, row in enumerate(rows, 2) if line not in bad]
    monkeypatch.setenv("LOYALTYCTL_IMPORT_BATCH_ROWS", "5")
    summary = twin.json("txn", "import", str(write_jsonl(tmp_path / "good.jsonl", good)))
    assert summary["rejected"] == 0 and summary["rows"] == len(good)
    assert dump(cli) == dump(twin)
    twin.check()


@pytest.mark.partitioned
def test_lots_kept_between_batches_give_the_ledger_of_posting_row_by_row(
    cli: Cli, twin: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One transaction over many small batches keeps a member's open lots between them:
    later redemptions and returns of early purchases (lots the first small debit never
    loaded) take from the same lots as the commands would."""
    rows: list[dict[str, Any]] = []
    for i in range(36):
        day = f"2026-{1 + i // 4:02d}-{1 + (i % 4) * 7:02d}"
        rows.append({"member": "M1", "ref": f"P{i}", "amount": f"{10 + i % 7}.50", "at": day})
        if i == 4:  # takes from the oldest lot alone: the others stay unread
            rows.append(
                {
                    "type": "adjust",
                    "member": "M1",
                    "ref": "A4",
                    "points": "-30",
                    "reason": "redeemed",
                    "at": day,
                }
            )
    late = "2026-10-01"
    rows += [
        {
            "type": "return",
            "member": "M1",
            "ref": "R1",
            "original": "P30",
            "amount": "5.00",
            "at": late,
        },
        {
            "type": "return",
            "member": "M1",
            "ref": "R2",
            "original": "P2",
            "amount": "12.50",
            "at": late,
        },
        {
            "type": "adjust",
            "member": "M1",
            "ref": "A99",
            "points": "-900",
            "reason": "redeemed",
            "at": late,
        },
        {
            "type": "return",
            "member": "M1",
            "ref": "R3",
            "original": "P35",
            "amount": "10.50",
            "at": late,
        },
        {
            "type": "adjust",
            "member": "M1",
            "ref": "A100",
            "points": "-2000",
            "reason": "redeemed",
            "at": late,
        },
    ]
    for db in (cli, twin):
        enroll_all(db, "cafe", tmp_path)
    for row in rows:
        assert post_one(twin, row) == 0, row
    monkeypatch.setenv("LOYALTYCTL_IMPORT_BATCH_ROWS", "3")
    summary = cli.json("txn", "import", str(write_csv(tmp_path / "m1.csv", rows)))
    assert summary["applied"] == len(rows)
    assert dump(cli) == dump(twin)
    cli.check()


@pytest.mark.partitioned
def test_member_import_enrolls_as_member_enroll(cli: Cli, twin: Cli, tmp_path: Path) -> None:
    rows = [
        {"member": "C1", "name": "Ann", "email": "ann@example.com", "enrolled_at": "2026-02-01"},
        {"member": "C2", "phone": "+44 20 7946 0000", "birthday": "1990-05-17"},
        {"member": "C1", "name": "Ann"},  # the same again: a duplicate
        {"member": "C1", "email": "other@example.com"},  # different: a conflict
        {"member": "C3", "birthday": "1990-02-30"},  # not a date
        {"member": " C4 ", "enrolled_at": "2026-03-01T08:30"},
    ]
    columns = ["member", "name", "email", "phone", "birthday", "enrolled_at"]
    for db in (cli, twin):
        db("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
    path = write_csv(tmp_path / "members.csv", rows, columns)
    summary = cli.json("member", "import", str(path), "--rejects", str(tmp_path / "bad.csv"))
    assert (summary["applied"], summary["duplicates"], summary["rejected"]) == (3, 1, 2)
    with (tmp_path / "bad.csv").open(newline="") as fh:
        bad = list(csv.DictReader(fh))
    assert [(r["line"], r["member"]) for r in bad] == [("5", "C1"), ("6", "C3")]
    assert bad[0]["reason"].startswith("conflict: member C1 is already enrolled")
    assert bad[1]["reason"].startswith("invalid: birthday")
    twin(
        "member",
        "enroll",
        "C1",
        "--name",
        "Ann",
        "--email",
        "ann@example.com",
        "--at",
        "2026-02-01",
    )
    twin(
        "member",
        "enroll",
        "C2",
        "--phone",
        "+44 20 7946 0000",
        "--birthday",
        "1990-05-17",
        "--at",
        "2026-11-22",
    )
    twin("member", "enroll", "C4", "--at", "2026-03-01T08:30")
    for code in ("C1", "C4"):
        assert cli.json("member", "show", code) == twin.json("member", "show", code)
        assert cli.json("txn", "list", code) == twin.json("txn", "list", code)
    # C2 was enrolled "now": same ledger, at another instant.
    assert [t["points"] for t in cli.json("txn", "list", "C2")] == [100]
    cli.check()


@pytest.mark.partitioned
def test_opening_balances(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
    cli("member", "enroll", "OLD", "--at", "2026-01-02")
    cli(
        "txn",
        "adjust",
        "OLD",
        "--points",
        "-300",
        "--reason",
        "debt",
        "--ref",
        "D1",
        "--at",
        "2026-01-03",
    )
    rows = [
        {
            "member": "N1",
            "enrolled_at": "2026-02-01",
            "opening_balance": "2500",
            "opening_expires": "2026-12-31",
        },
        {"member": "N2", "enrolled_at": "2026-02-01", "opening_balance": "40"},
        {"member": "OLD", "opening_balance": "500"},
        {"member": "N3", "opening_balance": "-5"},
        {"member": "N4", "opening_expires": "2026-12-31"},
    ]
    path = write_jsonl(tmp_path / "members.jsonl", rows)
    out = cli.json("member", "import", str(path), "--rejects", str(tmp_path / "bad.jsonl"))
    assert (out["applied"], out["rejected"]) == (3, 2)
    bad = [json.loads(line) for line in (tmp_path / "bad.jsonl").read_text().splitlines()]
    assert [(b["line"], b["member"]) for b in bad] == [(4, "N3"), (5, "N4")]
    assert bad[0]["opening_balance"] == "-5" and bad[0]["reason"].startswith("invalid:")

    n1 = cli.json("member", "show", "N1")
    # signup 100 + opening 2500 (bonuses qualify in this program): gold at once
    assert (n1["balance"], n1["tier"]) == (2600, "gold")
    assert {"date": "2026-12-31", "points": 2500} in n1["expiring"]
    txns = cli.json("txn", "list", "N1")
    assert [(t["ref"], t["kind"], t["points"]) for t in txns] == [
        ("signup:N1", "bonus", 100),
        ("opening:N1", "adjust", 2500),
    ]
    n2 = cli.json("member", "show", "N2")
    assert {"date": "2026-08-31", "points": 140} in n2["expiring"]  # the program's policy
    old = cli.json("member", "show", "OLD")
    assert (old["balance"], old["debt"]) == (100 - 300 + 500, 0)  # the debt settled first
    engine = create_engine(cli.db)
    with engine.connect() as conn:
        kinds = conn.execute(
            text(
                "SELECT l.kind, l.points FROM points_lot l JOIN txn t ON t.id = l.txn_id "
                "WHERE t.ref = 'opening:N1'"
            )
        ).all()
    engine.dispose()
    assert [tuple(k) for k in kinds] == [("opening", 2500)]
    # The same file again changes nothing; another opening balance for N1 is a conflict.
    again = cli.json("member", "import", str(path), "--rejects", str(tmp_path / "bad.jsonl"))
    assert (again["applied"], again["duplicates"], again["rejected"]) == (0, 3, 2)
    write_jsonl(path, [{"member": "N1", "opening_balance": "2400"}])
    result = cli("member", "import", str(path), code=4)
    assert "conflict: reference opening:N1" in result.stderr
    cli.check()


def test_rejects_file_keeps_the_rows_as_they_were(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    path = tmp_path / "till.csv"
    path.write_text(
        "ref,member,amount,at,type,points,reason\n"
        "T1,M1,10.00,2026-01-05,,,\n"
        "T2,M9,10.00,2026-01-05,,,\n"
        "\n"
        "T3,M1,1e3,2026-01-05,,,\n"
        'A1,M1,,2026-01-05,adjust,5,"oops, ""sorry"""\n'
        "A2,M1,,2026-01-05,adjust,x,why\n"
        "T4,M1,5.00\n",
        encoding="utf-8",
    )
    bad = tmp_path / "bad.csv"
    summary = cli.json("txn", "import", str(path), "--rejects", str(bad))
    assert (summary["rows"], summary["applied"], summary["rejected"]) == (6, 2, 4)
    assert bad.read_text(encoding="utf-8").splitlines() == [
        "line,reason,ref,member,amount,at,type,points,adjust_reason",
        "3,not found: member M9 not found in program cafe,T2,M9,10.00,2026-01-05,,,",
        "5,invalid: amount '1e3' is not a valid amount,T3,M1,1e3,2026-01-05,,,",
        "7,invalid: points 'x' is not a whole number,A2,M1,,2026-01-05,adjust,x,why",
        "8,invalid: has 3 fields but the header has 7,T4,M1,5.00",
    ]
    assert [t["ref"] for t in cli.json("txn", "list", "M1")] == ["signup:M1", "T1", "A1"]
    cli.check()


def test_a_fixed_rejects_file_imports_as_it_is(cli: Cli, tmp_path: Path) -> None:
    """The operator's loop: import, fix what the rejects file lists, import that file."""
    cli("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    path = tmp_path / "till.csv"
    path.write_text(
        "ref,member,amount,at,type,points,reason\n"
        "T1,M1,10.00,2026-01-05,,,\n"
        "T2,M9,10.00,2026-01-05,,,\n"
        "A1,M1,,2026-01-05,adjust,x,goodwill\n",
        encoding="utf-8",
    )
    bad = tmp_path / "bad.csv"
    assert cli.json("txn", "import", str(path), "--rejects", str(bad))["rejected"] == 2
    fixed = bad.read_text(encoding="utf-8").replace(",x,goodwill", ",5,goodwill")
    bad.write_text(fixed, encoding="utf-8")
    still = tmp_path / "still.csv"
    summary = cli.json("txn", "import", str(bad), "--rejects", str(still))
    assert (summary["rows"], summary["applied"], summary["rejected"]) == (2, 1, 1)
    # Rejected again: line in the file imported, the row as it was, no stacked columns.
    assert still.read_text(encoding="utf-8").splitlines() == [
        "line,reason,ref,member,amount,at,type,points,adjust_reason",
        "2,not found: member M9 not found in program cafe,T2,M9,10.00,2026-01-05,,,",
    ]
    adjust = cli.json("txn", "list", "M1")[-1]
    assert (adjust["ref"], adjust["points"]) == ("A1", 5)
    assert cli.json("txn", "import", str(bad), "--rejects", str(still))["duplicates"] == 1
    cli.check()


def test_a_fixed_jsonl_rejects_file_imports_as_it_is(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    path = tmp_path / "till.jsonl"
    path.write_text(
        '{"member": "M1", "ref": "A1", "type": "adjust", "points": "x", "reason": "goodwill"}\n'
        '{"member": "M1", "ref": "T1", "amount": "1.005", "at": "2026-01-05"}\n',
        encoding="utf-8",
    )
    bad = tmp_path / "bad.jsonl"
    assert cli.json("txn", "import", str(path), "--rejects", str(bad))["rejected"] == 2
    rows = [json.loads(line) for line in bad.read_text(encoding="utf-8").splitlines()]
    assert rows[0]["adjust_reason"] == "goodwill"
    rows[0]["points"] = -5
    rows[1]["amount"] = "1.01"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert cli.json("txn", "import", str(bad))["applied"] == 2
    txns = {t["ref"]: t for t in cli.json("txn", "list", "M1")}
    assert (txns["A1"]["points"], txns["A1"]["reason"]) == (-5, "goodwill")
    assert txns["T1"]["amount"] == "1.01"
    cli.check()


def test_returns_of_one_purchase_in_one_file_add_up(cli: Cli, tmp_path: Path) -> None:
    """Each return counts the ones before it in the same batch: no over-return."""
    cli("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    path = tmp_path / "till.csv"
    path.write_text(
        "type,member,ref,amount,at,original\n"
        "purchase,M1,P1,20.00,2026-02-01,\n"
        "return,M1,R1,10.00,2026-02-02,P1\n"
        "return,M1,R2,10.00,2026-02-03,P1\n"
        "return,M1,R3,5.00,2026-02-04,P1\n",
        encoding="utf-8",
    )
    bad = tmp_path / "bad.csv"
    summary = cli.json("txn", "import", str(path), "--rejects", str(bad))
    assert (summary["applied"], summary["rejected"]) == (3, 1)
    assert "only 0.00 of 20.00 is left to return" in bad.read_text(encoding="utf-8")
    txns = {t["ref"]: t for t in cli.json("txn", "list", "M1")}
    assert txns["R1"]["points"] + txns["R2"]["points"] == -txns["P1"]["points"]
    cli.check()


def test_jsonl_rejects_and_numbers(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    path = tmp_path / "till.data"
    path.write_text(
        '{"member": "M1", "ref": "T1", "amount": 12.50, "at": "2026-01-05"}\n'
        '{"member": "M1", "ref": "T2", "amount": 1.005, "at": "2026-01-05"}\n'
        "not json\n"
        '{"member": "M1", "ref": "A1", "type": "adjust", "points": -20, "reason": "x"}\n'
        '{"member": "M1", "ref": "T3", "amount": true}\n'
        "[1, 2]\n",
        encoding="utf-8",
    )
    bad = tmp_path / "bad.jsonl"
    result = cli("txn", "import", str(path), "--rejects", str(bad), code=4)
    assert "cannot tell the format" in result.stderr
    summary = cli.json("txn", "import", str(path), "--format", "jsonl", "--rejects", str(bad))
    assert (summary["applied"], summary["rejected"]) == (2, 4)
    lines = [json.loads(line) for line in bad.read_text().splitlines()]
    assert [(b["line"], b["reason"].split(":")[0]) for b in lines] == [
        (2, "invalid"),
        (3, "invalid"),
        (5, "invalid"),
        (6, "invalid"),
    ]
    assert lines[0]["ref"] == "T2" and lines[1]["raw"] == "not json"
    txns = cli.json("txn", "list", "M1")
    assert [(t["ref"], t["amount"], t["points"]) for t in txns][1:] == [
        ("T1", "12.50", 125),
        ("A1", None, -20),
    ]


def test_without_rejects_a_bad_row_fails_everything(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    rows = [
        {"member": "M1", "ref": f"T{i}", "amount": "1.00", "at": "2026-01-05"} for i in range(30)
    ]
    rows[25]["member"] = "M404"
    rows[27]["amount"] = "-1"
    path = write_csv(tmp_path / "till.csv", rows)
    before = dump(cli)
    result = cli("txn", "import", str(path), "--json", code=4)
    assert result.stdout == ""
    assert "2 bad rows" in result.stderr and "nothing was imported" in result.stderr
    assert "line 27: not found: member M404" in result.stderr
    assert "line 29: invalid: amount '-1'" in result.stderr
    assert dump(cli) == before
    # --dry-run --rejects lists them and still writes nothing.
    dry = cli.json("txn", "import", str(path), "--dry-run", "--rejects", str(tmp_path / "b.csv"))
    assert (dry["applied"], dry["rejected"], dry["dry_run"]) == (28, 2, True)
    assert dump(cli) == before
    assert len((tmp_path / "b.csv").read_text().splitlines()) == 3


@pytest.mark.partitioned
def test_same_file_again_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
    for member in MEMBERS:
        cli("member", "enroll", member, "--at", "2026-01-01")
    rows = [r for r in mixed_rows(seed=3, digits=2) if r["member"] != "M6"]
    path = write_csv(tmp_path / "till.csv", rows)
    first = cli.json("txn", "import", str(path), "--rejects", str(tmp_path / "bad.csv"))
    after = dump(cli)
    again = cli.json("txn", "import", str(path), "--rejects", str(tmp_path / "bad.csv"))
    assert again["applied"] == 0
    assert again["duplicates"] == first["applied"] + first["duplicates"]
    assert again["rejected"] == first["rejected"]
    assert dump(cli) == after
    dry = cli.json("txn", "import", str(path), "--dry-run", "--rejects", str(tmp_path / "b.csv"))
    assert dry["applied"] == 0 and dump(cli) == after


def test_unknown_columns_refuse_the_whole_file(cli: Cli, tmp_path: Path) -> None:
    cli("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
    cli("member", "enroll", "M1", "--at", "2026-01-01")
    path = tmp_path / "till.csv"
    path.write_text("member,ref,amount,till\nM1,T1,1.00,north\n", encoding="utf-8")
    result = cli("txn", "import", str(path), "--rejects", str(tmp_path / "b.csv"), code=4)
    assert "unknown column 'till'" in result.stderr
    path.write_text("member,amount\nM1,1.00\n", encoding="utf-8")
    assert "required column 'ref'" in cli("txn", "import", str(path), code=4).stderr
    # A JSON Lines field nobody knows, far down the file: still nothing is imported.
    lines = [{"member": "M1", "ref": f"T{i}", "amount": "1"} for i in range(40)]
    lines[35]["colour"] = "red"
    jsonl = write_jsonl(tmp_path / "till.jsonl", lines)
    result = cli("txn", "import", str(jsonl), "--rejects", str(tmp_path / "b.jsonl"), code=4)
    assert "till.jsonl:36: unknown field 'colour'" in result.stderr
    assert [t["ref"] for t in cli.json("txn", "list", "M1")] == ["signup:M1"]
    assert "unknown field 'colour'" in cli("txn", "import", str(jsonl), code=4).stderr
    assert [t["ref"] for t in cli.json("txn", "list", "M1")] == ["signup:M1"]


def _subprocess_import(db: str, path: Path, *extra: str, env: dict[str, str]) -> Any:
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
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
        timeout=120,
    )


@pytest.mark.parametrize("with_rejects", [True, False])
def test_killed_import_runs_again_to_exactly_once(
    cli: Cli, twin: Cli, tmp_path: Path, with_rejects: bool
) -> None:
    for db in (cli, twin):
        enroll_all(db, "cafe", tmp_path)
    rows = mixed_rows(seed=5, digits=2)
    path = write_csv(tmp_path / "till.csv", rows)
    if not with_rejects:  # only good rows: a dry run lists the bad ones
        twin("txn", "import", str(path), "--dry-run", "--rejects", str(tmp_path / "dry.csv"))
        with (tmp_path / "dry.csv").open(newline="") as fh:
            bad = {int(r["line"]) for r in csv.DictReader(fh)}
        rows = [row for line, row in enumerate(rows, 2) if line not in bad]
        path = write_csv(tmp_path / "till.csv", rows)
    extra = ("--rejects", str(tmp_path / "bad.csv")) if with_rejects else ()
    env = {"LOYALTYCTL_IMPORT_BATCH_ROWS": "10"}

    killed = _subprocess_import(
        cli.db, path, *extra, env={**env, "LOYALTYCTL_TEST_DIE_AFTER_BATCHES": "3"}
    )
    assert killed.returncode == -9, killed.stderr
    assert killed.stdout == ""
    engine = create_engine(cli.db)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT COUNT(*) FROM txn WHERE ref NOT LIKE 'signup:%'"))
        partial = stored.scalar_one()
    engine.dispose()
    if with_rejects:
        assert 15 < partial <= 30  # three batches of ten rows committed, no more
    else:
        assert partial == 0  # one transaction: nothing
    cli.check()

    done = _subprocess_import(cli.db, path, *extra, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["duplicates"] >= partial
    # The same file imported once, without interruption, into the twin: the same ledger.
    clean = _subprocess_import(twin.db, path, *extra, env=env)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)["applied"] == summary["applied"] + partial
    assert dump(cli) == dump(twin)
    cli.check()


def test_purchase_payload_text_is_the_canonical_json() -> None:
    from loyaltyctl.ledger.requests import canonical as _canonical

    for member, category, amount in [
        ("M1", None, "12.50"),
        ('Zoë "the" \\ café', "beans/ñ", "0"),
        ("\u2603\n\t", "", "1.5"),
    ]:
        iso = "2026-03-01T12:30:05.000120+00:00"
        expected = _canonical(
            {"kind": "purchase", "member": member, "lines": [[category, amount]], "at": iso}
        )
        assert purchase_payload_text(iso, member, category, amount) == expected


def test_each_row_uses_the_program_version_in_force(cli: Cli, twin: Cli, tmp_path: Path) -> None:
    """Rows dated before a version was loaded earn by the one before it."""
    later = CAFE.replace("per_unit = 10", "per_unit = 7").replace('"Double"', '"Triple"')
    rows = [
        {"member": "M1", "ref": "V1", "amount": "10.00", "at": "2026-03-01T10:00"},
        {"member": "M1", "ref": "V2", "amount": "10.00", "at": "2026-07-01T10:00"},
        {
            "type": "adjust",
            "member": "M1",
            "ref": "V3",
            "points": "-5",
            "reason": "x",
            "at": "2026-07-02T10:00",
        },
        {
            "type": "return",
            "member": "M1",
            "ref": "V4",
            "amount": "5.00",
            "original": "V1",
            "at": "2026-07-03T10:00",
        },
    ]
    # The later version is loaded on 2026-06-01: rows after it earn by it.
    with freeze_time("2026-06-01T00:00:00Z"):
        for db in (cli, twin):
            db("program", "load", str(write_program(tmp_path, CAFE, "cafe.toml")))
            db("member", "enroll", "M1", "--at", "2026-01-01")
            db("program", "load", str(write_program(tmp_path, later, "cafe.toml")))
    for row in rows:
        assert post_one(twin, row) == 0
    cli.json("txn", "import", str(write_csv(tmp_path / "v.csv", rows)))
    assert [t["points"] for t in cli.json("txn", "list", "M1")] == [100, 100, 70, -5, -50]
    assert dump(cli) == dump(twin)
    cli.check()
