"""Tiers over time: every change is a step of the member's tier history, and what reads a
tier as of a day (report summary --as-of, statements, back-dated purchases, the importer)
reads it there. Also the migration that back-fills the history of an older database."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from freezegun import freeze_time
from sqlalchemy import Engine, text

from loyaltyctl.rules.tiers import TierStep, hold_start, tier_at
from tests.conftest import Cli, assert_models_match_schema, write_program

# Points metric, 10 points per unit, multipliers 1 / 1.5 / 2, a 12-month hold.
PROGRAM = """
[program]
key = "shop"
name = "Shop"
currency = "USD"
timezone = "Europe/London"

[earn]
per_unit = 10

[expiry]
policy = "never"

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
min = 5000
multiplier = 2.0
"""


def shop(cli: Cli, tmp_path: Path) -> Cli:
    cli("program", "load", str(write_program(tmp_path, PROGRAM)))
    return cli


def buy(cli: Cli, member: str, ref: str, amount: str, at: str) -> dict[str, Any]:
    data: dict[str, Any] = cli.json(
        "txn", "post", member, "--ref", ref, "--amount", amount, "--at", at
    )
    return data


def history(cli: Cli, member: str) -> list[dict[str, str]]:
    value: list[dict[str, str]] = cli.json("member", "show", member)["tier_history"]
    return value


# ---- the pure helper ---------------------------------------------------------------------


def test_tier_at_reads_the_step_in_force_on_a_day() -> None:
    steps = [
        TierStep("bronze", date(2027, 1, 5), "enrol"),
        TierStep("gold", date(2027, 1, 10), "upgrade"),
        TierStep("silver", date(2028, 1, 15), "review"),
        TierStep("gold", date(2028, 1, 15), "upgrade"),  # same day: recorded later wins
    ]
    assert tier_at(steps, date(2027, 1, 4)) is None
    assert tier_at(steps, date(2027, 1, 9)) == steps[0]
    assert tier_at(steps, date(2028, 1, 14)) == steps[1]
    assert tier_at(steps, date(2028, 1, 15)) == steps[3]
    assert hold_start(steps, date(2027, 1, 9), "bronze") is None
    assert hold_start(steps, date(2027, 6, 1), "bronze") == date(2027, 1, 10)


# ---- the three bugs -----------------------------------------------------------------------


def _gold_then_reviewed(cli: Cli) -> None:
    """G: 500.00 on 2027-01-10 earns 5000 points at bronze and makes it gold (since
    2027-01-10, held until 2028-01-10). The review of 2028-01-15 finds the window
    2027-01-16..2028-01-15 empty: one level down, silver from 2028-01-15."""
    with freeze_time("2027-01-05T10:00:00Z"):
        cli("member", "enroll", "G")
    with freeze_time("2027-01-10T10:00:00Z"):
        assert buy(cli, "G", "P1", "500.00", "2027-01-10T10:00:00Z")["points"] == 5000
    with freeze_time("2028-01-15T02:00:00Z"):
        result = cli.json("tiers", "review", "--as-of", "2028-01-15")
        assert result["downgraded"] == 1


def test_report_summary_as_of_the_review_day_counts_the_new_tier(cli: Cli, tmp_path: Path) -> None:
    _gold_then_reviewed(shop(cli, tmp_path))
    with freeze_time("2028-03-10T12:00:00Z"):
        before = cli.json("report", "summary", "--as-of", "2028-01-14")
        on_the_day = cli.json("report", "summary", "--as-of", "2028-01-15")
        enrolled = cli.json("report", "summary", "--as-of", "2027-01-09")
    assert before["tiers"] == {"bronze": 0, "silver": 0, "gold": 1}
    assert on_the_day["tiers"] == {"bronze": 0, "silver": 1, "gold": 0}
    assert enrolled["tiers"] == {"bronze": 1, "silver": 0, "gold": 0}
    cli.check()


def test_statement_of_the_month_after_a_review_shows_the_tier_then_held(
    cli: Cli, tmp_path: Path
) -> None:
    _gold_then_reviewed(shop(cli, tmp_path))
    with freeze_time("2028-03-10T12:00:00Z"):
        feb = cli.json("statement", "G", "--period", "2028-02", "--format", "json")
        dec = cli.json("statement", "G", "--period", "2027-12", "--format", "json")
    # Silver from the review, held 12 months from it.
    assert (feb["tier"], feb["hold_until"]) == ("silver", "2029-01-15")
    assert (dec["tier"], dec["hold_until"]) == ("gold", "2028-01-10")


def test_a_back_dated_purchase_earns_at_the_tier_held_on_its_day(cli: Cli, tmp_path: Path) -> None:
    """B is gold from 2027-03-01 (600.00 → 6000 points). A purchase of 10.00 posted on
    2027-04-01 for 2027-02-01, when B was bronze, earns 100 × 1.0 = 100 points, not
    today's 100 × 2.0; one dated after the upgrade earns 200."""
    shop(cli, tmp_path)
    with freeze_time("2027-04-01T12:00:00Z"):
        cli("member", "enroll", "B", "--at", "2027-01-05")
        assert buy(cli, "B", "B1", "600.00", "2027-03-01T12:00:00Z")["tier"] == "gold"
        late = buy(cli, "B", "B2", "10.00", "2027-02-01T12:00:00Z")
        after = buy(cli, "B", "B3", "10.00", "2027-03-02T12:00:00Z")
    assert (late["points"], late["tier"]) == (100, "gold")
    assert after["points"] == 200
    assert history(cli, "B") == [
        {"tier": "bronze", "from": "2027-01-05", "reason": "enrol"},
        {"tier": "gold", "from": "2027-03-01", "reason": "upgrade"},
    ]
    cli.check()


def test_an_upgrade_by_a_back_dated_purchase_is_dated_by_its_day(cli: Cli, tmp_path: Path) -> None:
    """C: 150.00 posted on 2027-04-01 for 2027-02-01 earns 1500 points: silver from
    2027-02-01 (the hold runs from then), and a report of 2027-02-15 counts it silver."""
    shop(cli, tmp_path)
    with freeze_time("2027-04-01T12:00:00Z"):
        cli("member", "enroll", "C", "--at", "2027-01-05")
        assert buy(cli, "C", "C1", "150.00", "2027-02-01T12:00:00Z")["points"] == 1500
        shown = cli.json("member", "show", "C")
        report = cli.json("report", "summary", "--as-of", "2027-02-15")
    assert (shown["tier"], shown["tier_since"], shown["hold_until"]) == (
        "silver",
        "2027-02-01",
        "2028-02-01",
    )
    assert shown["tier_history"][-1] == {
        "tier": "silver",
        "from": "2027-02-01",
        "reason": "upgrade",
    }
    assert report["tiers"] == {"bronze": 0, "silver": 1, "gold": 0}
    cli.check()


def test_imported_back_dated_purchases_earn_at_the_tier_of_their_day(
    cli: Cli, tmp_path: Path
) -> None:
    shop(cli, tmp_path)
    rows = tmp_path / "sales.csv"
    rows.write_text(
        "member,ref,amount,at\n"
        "I,I1,600.00,2027-03-01T12:00:00Z\n"
        "I,I2,10.00,2027-02-01T12:00:00Z\n"
        "I,I3,10.00,2027-03-05T12:00:00Z\n",
        encoding="utf-8",
    )
    with freeze_time("2027-04-01T12:00:00Z"):
        cli("member", "enroll", "I", "--at", "2027-01-05")
        cli("txn", "import", str(rows))
        late = rows.with_name("late.csv")
        late.write_text("member,ref,amount,at\nI,I4,10.00,2027-02-02T12:00:00Z\n", "utf-8")
        cli("txn", "import", str(late))
        txns = {t["ref"]: t["points"] for t in cli.json("txn", "list", "I")}
    # I1 6000 at bronze (gold from 2027-03-01); I2 and I4 predate it: 100 each; I3 200.
    assert txns == {"I1": 6000, "I2": 100, "I3": 200, "I4": 100}
    assert history(cli, "I") == [
        {"tier": "bronze", "from": "2027-01-05", "reason": "enrol"},
        {"tier": "gold", "from": "2027-03-01", "reason": "upgrade"},
    ]
    cli.check()


def test_member_show_lists_the_history_oldest_first(cli: Cli, tmp_path: Path) -> None:
    _gold_then_reviewed(shop(cli, tmp_path))
    with freeze_time("2028-03-10T12:00:00Z"):
        data = cli.json("member", "show", "G")
        shown = cli("member", "show", "G").stdout
    assert data["tier_history"] == [
        {"tier": "bronze", "from": "2027-01-05", "reason": "enrol"},
        {"tier": "gold", "from": "2027-01-10", "reason": "upgrade"},
        {"tier": "silver", "from": "2028-01-15", "reason": "review"},
    ]
    assert "bronze from 2027-01-05 (enrol); gold from 2027-01-10 (upgrade)" in shown


# ---- the migration -------------------------------------------------------------------------


def test_migration_back_fills_the_history_of_a_0001_database(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """A database at revision 0001 with members, a purchase that upgraded one and a tier
    review that moved one down (written by the 0001 code paths' SQL), upgraded to head."""
    from loyaltyctl.store.migrate import downgrade, upgrade

    downgrade(engine, "0001")  # the test databases are at head
    spec = json.dumps(
        {
            "program": {"key": "shop", "name": "Shop", "timezone": "Europe/London"},
            "tiers": {"levels": [{"key": "bronze"}, {"key": "silver"}, {"key": "gold"}]},
        }
    )
    with engine.begin() as conn:
        run = conn.execute
        run(
            text("INSERT INTO program (id, key, name, created_at) VALUES (1, 'shop', 'Shop', :t)"),
            {"t": "2027-01-01 00:00:00"},
        )
        run(
            text(
                "INSERT INTO program_version (id, program_id, version, fingerprint, source, spec,"
                " loaded_at) VALUES (1, 1, 1, 'f', '', :spec, :t)"
            ),
            {"spec": spec, "t": "2027-01-01 00:00:00"},
        )
        members = [
            # (id, code, tier, tier_since, enrolled_at UTC)
            (1, "QUIET", "bronze", None, "2027-01-05 23:30:00"),  # 2027-01-05 in London
            (2, "UP", "gold", "2027-06-02", "2027-01-05 10:00:00"),
            (3, "DOWN", "silver", "2028-01-15", "2027-01-05 10:00:00"),
        ]
        for mid, code, tier, since, enrolled in members:
            run(
                text(
                    "INSERT INTO member (id, program_id, code, status, tier, tier_since,"
                    " enrolled_at, balance, debt, updated_at)"
                    " VALUES (:id, 1, :code, 'active', :tier, :since, :at, 0, 0, :at)"
                ),
                {"id": mid, "code": code, "tier": tier, "since": since, "at": enrolled},
            )
        txns = [
            # (id, member, ref, occurred_at UTC, tier_after)
            (1, 2, "U1", "2027-03-01 12:00:00", "silver"),
            (2, 2, "U2", "2027-06-01 23:30:00", "gold"),  # 2027-06-02 in London (BST)
            (3, 3, "D1", "2027-01-10 12:00:00", "gold"),
        ]
        for tid, mid, ref, occurred, after in txns:
            run(
                text(
                    "INSERT INTO txn (id, program_id, member_id, ref, kind, occurred_at,"
                    " recorded_at, payload, points, balance_after, tier_after, qual_points,"
                    " qual_spend_minor, qual_visits, qual_at, program_version_id)"
                    " VALUES (:id, 1, :m, :ref, 'purchase', :at, :at, '{}', 0, 0, :after,"
                    " 0, 0, 1, :at, 1)"
                ),
                {"id": tid, "m": mid, "ref": ref, "at": occurred, "after": after},
            )
        run(
            text(
                "INSERT INTO job_run (id, program_id, job, as_of, status, started_at,"
                " members, points, upgraded, downgraded)"
                " VALUES (1, 1, 'tiers', :day, 'done', :t, 1, 0, 0, 1)"
            ),
            {"day": "2028-01-15", "t": "2028-01-15 02:00:00"},
        )
        if conn.dialect.name == "postgresql":
            for table in ("program", "program_version", "member", "txn", "job_run"):
                run(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 10)"))
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT m.code, c.tier, c.effective_on, c.reason, c.txn_id FROM tier_change c"
                " JOIN member m ON m.id = c.member_id ORDER BY m.id, c.effective_on, c.id"
            )
        ).all()
    got = [(code, tier, str(day), reason, txn) for code, tier, day, reason, txn in rows]
    assert got == [
        ("QUIET", "bronze", "2027-01-05", "enrol", None),
        ("UP", "bronze", "2027-01-05", "enrol", None),
        ("UP", "silver", "2027-03-01", "upgrade", 1),
        ("UP", "gold", "2027-06-02", "upgrade", 2),
        ("DOWN", "bronze", "2027-01-05", "enrol", None),
        ("DOWN", "gold", "2027-01-10", "upgrade", 3),
        ("DOWN", "silver", "2028-01-15", "review", None),
    ]
    cli = Cli(db_url)
    cli.check()
    assert_models_match_schema(engine)
