"""Nightly jobs: expiry policies and their calendar edges, idempotency and catch-up, tier
reviews, voucher expiry, notices, and two runners at once or a run killed half-way
(real processes of the installed executable) on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine, text

from tests.conftest import Cli, write_program

NOW = "2030-06-01T12:00:00Z"
EXE = Path(sys.executable).parent / "loyaltyctl"

TIERS = """
[tiers]
metric = "points"
window = "rolling-12-months"
hold_months = 12
downgrade = "{downgrade}"

[[tiers.levels]]
key = "member"
min = 0

[[tiers.levels]]
key = "silver"
min = {silver}

[[tiers.levels]]
key = "gold"
min = 5000
"""


def program_text(
    expiry: str,
    *,
    signup: int = 0,
    timezone: str = "UTC",
    downgrade: str = "one-level",
    silver: int = 1000,
    extra: str = "",
) -> str:
    return f"""
[program]
key = "shop"
name = "Shop"
currency = "USD"
timezone = "{timezone}"

[earn]
per_unit = 10
signup_bonus = {signup}

[expiry]
{expiry}
{TIERS.format(downgrade=downgrade, silver=silver)}
{extra}
"""


def load(cli: Cli, tmp_path: Path, expiry: str, **kwargs: Any) -> Cli:
    cli("program", "load", str(write_program(tmp_path, program_text(expiry, **kwargs))))
    return cli


def enroll(cli: Cli, member: str, at: str) -> None:
    cli("member", "enroll", member, "--at", at)


def buy(cli: Cli, member: str, ref: str, amount: str, at: str) -> dict[str, Any]:
    data: dict[str, Any] = cli.json(
        "txn", "post", member, "--ref", ref, "--amount", amount, "--at", at
    )
    return data


def expire(cli: Cli, as_of: str, *extra: str, code: int = 0) -> Any:
    if code:
        return cli("expire", "--as-of", as_of, *extra, code=code)
    return cli.json("expire", "--as-of", as_of, *extra)


def review(cli: Cli, as_of: str, *extra: str) -> Any:
    return cli.json("tiers", "review", "--as-of", as_of, *extra)


def balance(cli: Cli, member: str) -> int:
    value: int = cli.json("member", "show", member)["balance"]
    return value


def tier(cli: Cli, member: str) -> tuple[str, str | None]:
    data = cli.json("member", "show", member)
    return data["tier"], data["tier_since"]


def expired_points(engine: Engine) -> int:
    with engine.connect() as conn:
        value = conn.execute(
            text("SELECT COALESCE(SUM(points), 0) FROM points_entry WHERE kind = 'expire'")
        ).scalar()
    return -int(value or 0)


def job_runs(engine: Engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT job, as_of, status FROM job_run ORDER BY id")).all()
    return [(job, str(as_of), status) for job, as_of, status in rows]


# ---- expiry policies and their calendar edges ----------------------------------------------


@freeze_time(NOW)
@pytest.mark.parametrize(
    ("earned", "due"),
    [("2027-01-31", "2027-02-28"), ("2028-01-31", "2028-02-29"), ("2027-08-31", "2027-09-30")],
)
def test_rolling_one_month_clamps_to_the_end_of_a_shorter_month(
    cli: Cli, tmp_path: Path, earned: str, due: str
) -> None:
    load(cli, tmp_path, 'policy = "rolling"\nmonths = 1')
    enroll(cli, "M1", "2027-01-01")
    buy(cli, "M1", "T1", "10.00", earned)
    assert cli.json("member", "show", "M1")["expiring"] == [{"date": due, "points": 100}]
    day_before = f"{due[:8]}{int(due[8:]) - 1:02d}"
    first = expire(cli, day_before)
    assert (first["members"], first["points_expired"]) == (0, 0)
    assert balance(cli, "M1") == 100
    second = expire(cli, due)
    assert second == {
        "as_of": due,
        "program": "shop",
        "members": 1,
        "points_expired": 100,
        "lots": 1,
        "already_done": False,
        "dry_run": False,
    }
    assert balance(cli, "M1") == 0
    cli.check()


@freeze_time(NOW)
def test_rolling_month_end_pushes_to_the_last_day(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path, 'policy = "rolling"\nmonths = 1\nmonth_end = true')
    enroll(cli, "M1", "2028-01-01")
    buy(cli, "M1", "T1", "10.00", "2028-01-15")
    buy(cli, "M1", "T2", "5.00", "2028-02-01")
    assert expire(cli, "2028-02-28")["points_expired"] == 0
    assert expire(cli, "2028-02-29")["points_expired"] == 100
    assert balance(cli, "M1") == 50
    assert expire(cli, "2028-03-31")["points_expired"] == 50
    cli.check()


@freeze_time(NOW)
def test_fixed_date_expires_a_years_points_on_the_day(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path, 'policy = "fixed_date"\nday = "12-31"\nyears = 1')
    enroll(cli, "M1", "2027-01-01")
    buy(cli, "M1", "T1", "10.00", "2027-01-01")
    buy(cli, "M1", "T2", "20.00", "2027-12-31T23:30")
    buy(cli, "M1", "T3", "5.00", "2028-01-01")
    assert expire(cli, "2028-12-30")["points_expired"] == 0
    result = expire(cli, "2028-12-31")
    assert (result["members"], result["points_expired"], result["lots"]) == (1, 300, 2)
    assert balance(cli, "M1") == 50
    assert cli.json("member", "show", "M1")["expiring"] == [{"date": "2029-12-31", "points": 50}]
    cli.check()


@freeze_time(NOW)
@pytest.mark.partitioned
def test_inactivity_expires_everything_and_a_purchase_resets_the_clock(
    cli: Cli, tmp_path: Path, engine: Engine
) -> None:
    load(cli, tmp_path, 'policy = "inactivity"\nmonths = 12', signup=50)
    for code in ("KEEPS", "LAPSES", "NEVER-BOUGHT", "LEAP"):
        enroll(cli, code, "2027-01-10")
    buy(cli, "KEEPS", "K1", "10.00", "2027-05-01")
    buy(cli, "LAPSES", "L1", "10.00", "2027-05-01")
    buy(cli, "LEAP", "P1", "10.00", "2028-02-29")
    # Enrolment is the last activity of a member who never bought: due 2028-01-10.
    assert expire(cli, "2028-01-09")["points_expired"] == 0
    assert expire(cli, "2028-01-10") | {"lots": None} == {
        "as_of": "2028-01-10",
        "program": "shop",
        "members": 1,
        "points_expired": 50,
        "lots": None,
        "already_done": False,
        "dry_run": False,
    }
    assert balance(cli, "NEVER-BOUGHT") == 0
    assert expire(cli, "2028-04-15")["points_expired"] == 0
    buy(cli, "KEEPS", "K2", "1.00", "2028-04-20")
    result = expire(cli, "2028-05-01")
    assert (result["members"], result["points_expired"]) == (1, 150)
    assert balance(cli, "LAPSES") == 0
    assert balance(cli, "KEEPS") == 160
    # 2028-02-29 + 12 months is 2029-02-28.
    assert expire(cli, "2029-02-27")["points_expired"] == 0
    assert balance(cli, "LEAP") == 150
    assert expire(cli, "2029-02-28")["points_expired"] == 150
    assert balance(cli, "LEAP") == 0
    assert expire(cli, "2029-04-20")["points_expired"] == 160
    assert expired_points(engine) == 50 + 150 + 150 + 160
    cli.check()


@freeze_time(NOW)
def test_never_expires_nothing(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path, 'policy = "never"', signup=10)
    enroll(cli, "M1", "2027-01-01")
    buy(cli, "M1", "T1", "10.00", "2027-01-02")
    assert expire(cli, "2030-06-01")["points_expired"] == 0
    assert balance(cli, "M1") == 110
    cli.check()


@freeze_time(NOW)
@pytest.mark.partitioned
def test_expiry_takes_only_what_is_left_of_a_lot(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path, 'policy = "rolling"\nmonths = 6')
    enroll(cli, "M1", "2027-01-01")
    buy(cli, "M1", "T1", "10.00", "2027-01-05")
    buy(cli, "M1", "T2", "10.00", "2027-03-05")
    cli(
        "txn",
        "adjust",
        "M1",
        "--ref",
        "A1",
        "--points",
        "-30",
        "--reason",
        "fix",
        "--at",
        "2027-04-01",
    )
    assert expire(cli, "2027-07-05")["points_expired"] == 70
    assert balance(cli, "M1") == 100
    cli.check()


# ---- runs: idempotency, catch-up, refusals ------------------------------------------------


@freeze_time(NOW)
def test_second_run_for_a_date_is_already_done_and_changes_nothing(
    cli: Cli, tmp_path: Path, engine: Engine
) -> None:
    load(cli, tmp_path, 'policy = "rolling"\nmonths = 1')
    enroll(cli, "M1", "2027-01-01")
    buy(cli, "M1", "T1", "10.00", "2027-01-05")
    first = expire(cli, "2027-02-10")
    again = expire(cli, "2027-02-10")
    assert first["already_done"] is False and again["already_done"] is True
    assert (again["members"], again["points_expired"]) == (1, 100)
    assert expired_points(engine) == 100
    text_out = cli("expire", "--as-of", "2027-02-10").stdout
    assert "already done" in text_out
    assert job_runs(engine) == [("expire", "2027-02-10", "done")]
    cli.check()


@freeze_time(NOW)
@pytest.mark.partitioned
def test_a_later_run_catches_up_on_missed_nights(cli: Cli, tmp_path: Path, engine: Engine) -> None:
    load(cli, tmp_path, 'policy = "rolling"\nmonths = 1')
    enroll(cli, "M1", "2027-01-01")
    enroll(cli, "M2", "2027-01-01")
    buy(cli, "M1", "T1", "10.00", "2027-01-01")
    buy(cli, "M1", "T2", "20.00", "2027-01-02")
    buy(cli, "M2", "T3", "30.00", "2027-01-05")
    buy(cli, "M2", "T4", "40.00", "2027-01-09")
    assert expire(cli, "2027-01-31")["points_expired"] == 0
    # Cron was down from 2027-02-01 to 2027-02-07.
    result = expire(cli, "2027-02-07")
    assert (result["members"], result["points_expired"], result["lots"]) == (2, 600, 3)
    assert expire(cli, "2027-02-09")["points_expired"] == 400
    assert expired_points(engine) == 1000
    assert [balance(cli, m) for m in ("M1", "M2")] == [0, 0]
    cli.check()


@freeze_time(NOW)
def test_a_date_before_the_last_run_is_refused(cli: Cli, tmp_path: Path, engine: Engine) -> None:
    load(cli, tmp_path, 'policy = "rolling"\nmonths = 1')
    enroll(cli, "M1", "2027-01-01")
    buy(cli, "M1", "T1", "10.00", "2027-01-05")
    expire(cli, "2027-03-01")
    refused = expire(cli, "2027-02-01", code=4)
    assert "earlier than its last completed run, as of 2027-03-01" in refused.stderr
    assert refused.stdout == ""
    assert expire(cli, "2027-03-01")["already_done"] is True
    assert [run[1] for run in job_runs(engine)] == ["2027-03-01"]


@freeze_time("2030-06-01T23:30:00Z")
def test_as_of_defaults_to_today_in_the_program_zone_and_the_future_is_refused(
    cli: Cli, tmp_path: Path
) -> None:
    load(cli, tmp_path, 'policy = "rolling"\nmonths = 1', timezone="Pacific/Auckland")
    assert cli.json("expire")["as_of"] == "2030-06-02"
    refused = expire(cli, "2030-06-03", code=4)
    assert "in the future" in refused.stderr
    assert cli("tiers", "review", "--as-of", "2030-06-03", code=4).stdout == ""
    assert cli("expire", "--as-of", "2030-13-01", code=4).stderr.startswith("error:")


@freeze_time(NOW)
def test_dry_run_reports_and_changes_nothing(cli: Cli, tmp_path: Path, engine: Engine) -> None:
    load(cli, tmp_path, 'policy = "rolling"\nmonths = 1')
    enroll(cli, "M1", "2027-01-01")
    buy(cli, "M1", "T1", "10.00", "2027-01-05")
    dry = expire(cli, "2027-02-10", "--dry-run")
    assert (dry["points_expired"], dry["dry_run"], dry["already_done"]) == (100, True, False)
    assert balance(cli, "M1") == 100
    assert job_runs(engine) == []
    assert expired_points(engine) == 0
    assert expire(cli, "2027-02-10")["already_done"] is False
    cli.check()


# ---- tier review ---------------------------------------------------------------------------


@freeze_time(NOW)
@pytest.mark.partitioned
def test_tier_hold_then_requalify_or_move_down_one_level(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path, 'policy = "never"')
    for code in ("STAYS", "DROPS"):
        enroll(cli, code, "2027-01-01")
    assert buy(cli, "STAYS", "S1", "600.00", "2027-01-10")["tier"] == "gold"
    assert buy(cli, "DROPS", "D1", "600.00", "2027-01-10")["tier"] == "gold"
    buy(cli, "STAYS", "S2", "500.00", "2027-12-01")
    held = review(cli, "2027-06-01")
    assert (held["members"], held["upgraded"], held["downgraded"]) == (0, 0, 0)
    assert tier(cli, "DROPS") == ("gold", "2027-01-10")
    result = review(cli, "2028-01-10")
    assert result == {
        "as_of": "2028-01-10",
        "program": "shop",
        "members": 2,
        "upgraded": 0,
        "downgraded": 1,
        "requalified": 1,
        "already_done": False,
        "dry_run": False,
    }
    assert tier(cli, "STAYS") == ("gold", "2028-01-10")
    # One level at a time, and the lower tier is held for a new period.
    assert tier(cli, "DROPS") == ("silver", "2028-01-10")
    assert review(cli, "2028-06-01")["downgraded"] == 0
    assert review(cli, "2029-01-10")["downgraded"] == 2
    assert tier(cli, "DROPS") == ("member", None)
    assert tier(cli, "STAYS") == ("silver", "2029-01-10")
    again = review(cli, "2029-01-10")
    assert again["already_done"] is True and again["downgraded"] == 2
    cli.check()


@freeze_time(NOW)
def test_to_qualified_downgrade_goes_straight_to_the_qualified_tier(
    cli: Cli, tmp_path: Path
) -> None:
    load(cli, tmp_path, 'policy = "never"', downgrade="to-qualified")
    enroll(cli, "M1", "2027-01-01")
    enroll(cli, "M2", "2027-01-01")
    buy(cli, "M1", "T1", "600.00", "2027-01-10")
    buy(cli, "M2", "T2", "600.00", "2027-01-10")
    buy(cli, "M2", "T3", "150.00", "2027-09-01")
    result = review(cli, "2028-01-10")
    assert (result["members"], result["downgraded"]) == (2, 2)
    assert tier(cli, "M1") == ("member", None)
    assert tier(cli, "M2") == ("silver", "2028-01-10")
    cli.check()


@freeze_time(NOW)
@pytest.mark.partitioned
def test_review_moves_up_whoever_qualifies_for_more(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path, 'policy = "never"')
    enroll(cli, "M1", "2030-01-01")
    buy(cli, "M1", "T1", "60.00", "2030-01-10")
    assert tier(cli, "M1") == ("member", None)
    # A new version lowers silver's threshold: the review catches up.
    cli(
        "program",
        "load",
        str(write_program(tmp_path, program_text('policy = "never"', silver=500), "v2.toml")),
    )
    dry = review(cli, "2030-06-01", "--dry-run")
    assert (dry["upgraded"], dry["dry_run"]) == (1, True)
    assert tier(cli, "M1") == ("member", None)
    result = review(cli, "2030-06-01")
    assert (result["members"], result["upgraded"], result["downgraded"]) == (1, 1, 0)
    assert tier(cli, "M1") == ("silver", "2030-06-01")
    cli.check()


def _deli_m1(cli: Cli, returned: str) -> None:
    """The worked member M1 of docs/ledger.md, steps 1 to 5, returning ``returned`` of T2."""
    cli("member", "enroll", "M1", "--at", "2026-01-05")
    cli(
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
    assert buy(cli, "M1", "T2", "190.00", "2026-06-06")["tier"] == "silver"
    buy(cli, "M1", "T3", "10.00", "2026-06-10")
    cli(
        "txn",
        "return",
        "M1",
        "--ref",
        "R1",
        "--original",
        "T2",
        "--amount",
        returned,
        "--at",
        "2026-06-12",
    )


@freeze_time("2027-01-02T10:00:00Z")
@pytest.mark.parametrize("returned", ["95.00", "5.00"])
def test_examples_m1_expiry_and_a_tier_kept_by_its_hold(deli: Cli, returned: str) -> None:
    # docs/ledger.md: with R1 for 95.00 the hold (12 months from 2026-06-06) still stands, so
    # M1 stays silver although 2027's spend is 0: a partial return lowers activity from
    # now on but does not unbuy the tier.
    _deli_m1(deli, returned)
    result = expire(deli, "2026-07-11")
    assert (result["members"], result["points_expired"]) == (1, 249)
    reviewed = review(deli, "2027-01-01")
    assert (reviewed["downgraded"], reviewed["upgraded"]) == (0, 0)
    assert tier(deli, "M1") == ("silver", "2026-06-06")
    deli.check()


@freeze_time("2027-01-02T10:00:00Z")
@pytest.mark.partitioned
def test_examples_m1_a_bought_and_returned_tier_is_undone_whatever_the_hold(deli: Cli) -> None:
    # The worked example: "had R1 been for 190.00, M1's 2026 spend would be 20.99 again and the
    # next review would move M1 back to bronze" (a buy-then-return must not buy a tier).
    _deli_m1(deli, "190.00")
    assert tier(deli, "M1") == ("silver", "2026-06-06")
    reviewed = review(deli, "2027-01-01")
    assert (reviewed["members"], reviewed["downgraded"], reviewed["upgraded"]) == (1, 1, 0)
    assert tier(deli, "M1") == ("bronze", None)
    deli.check()


@freeze_time("2026-11-01T10:00:00Z")
def test_a_returned_upgrade_is_kept_when_later_purchases_requalify(deli: Cli) -> None:
    _deli_m1(deli, "190.00")
    buy(deli, "M1", "T4", "200.00", "2026-09-01")
    assert review(deli, "2026-10-01")["downgraded"] == 0
    assert tier(deli, "M1") == ("silver", "2026-06-06")


# ---- vouchers and nightly -------------------------------------------------------------------


def _has_voucher_expiry() -> bool:
    from loyaltyctl.services.jobs import voucher_expiry_function

    return voucher_expiry_function() is not None


@freeze_time("2026-07-20T10:00:00Z")
@pytest.mark.partitioned
def test_nightly_runs_the_three_jobs_with_one_summary(deli: Cli, engine: Engine) -> None:
    _deli_m1(deli, "190.00")
    with_vouchers = _has_voucher_expiry()
    if with_vouchers:
        deli("reward", "redeem", "M1", "cookie", "--ref", "V1", "--at", "2026-07-01")
    summary = deli.json("nightly", "--as-of", "2026-07-20")
    assert summary["as_of"] == "2026-07-20" and summary["program"] == "deli"
    assert summary["expire"]["already_done"] is False
    assert summary["expire"]["members"] == 1
    assert summary["tiers"]["downgraded"] == 1
    if with_vouchers:
        assert summary["vouchers"] == {"expired": 1, "already_done": False}
    again = deli.json("nightly", "--as-of", "2026-07-20")
    assert again["expire"]["already_done"] and again["tiers"]["already_done"]
    assert again["expire"]["points_expired"] == summary["expire"]["points_expired"]
    if with_vouchers:
        assert again["vouchers"]["already_done"] is True
    jobs = {job for job, _, _ in job_runs(engine)}
    assert {"expire", "tiers"} <= jobs
    deli.check()


@pytest.mark.skipif(not _has_voucher_expiry(), reason="rewards.expire_vouchers not built yet")
@freeze_time("2026-07-20T10:00:00Z")
def test_nightly_expires_vouchers_at_the_end_of_the_as_of_day(deli: Cli) -> None:
    deli("member", "enroll", "M1", "--at", "2026-07-01")
    buy(deli, "M1", "T1", "100.00", "2026-07-01")
    # The cookie is valid 14 days: until 2026-07-15 10:00 (local).
    voucher = deli.json(
        "reward", "redeem", "M1", "cookie", "--ref", "V1", "--at", "2026-07-01T10:00"
    )
    assert deli.json("nightly", "--as-of", "2026-07-14")["vouchers"]["expired"] == 0
    assert deli.json("nightly", "--as-of", "2026-07-15")["vouchers"]["expired"] == 1
    shown = deli.json("voucher", "show", voucher["voucher"])
    assert shown["status"] == "expired"
    deli.check()


# ---- notices ----------------------------------------------------------------------------------


@freeze_time(NOW)
def test_notices_list_what_expires_within_the_period(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path, 'policy = "rolling"\nmonths = 1')
    cli(
        "member", "enroll", "M1", "--at", "2027-01-01", "--email", "m1@example.com", "--name", "Ann"
    )
    enroll(cli, "M2", "2027-01-01")
    buy(cli, "M1", "T1", "10.00", "2027-01-10")
    buy(cli, "M1", "T2", "20.00", "2027-01-10")
    buy(cli, "M2", "T3", "30.00", "2027-01-14")
    buy(cli, "M2", "T4", "40.00", "2027-03-01")
    out = tmp_path / "notices.csv"
    cli("expire", "notices", "--within", "30d", "--as-of", "2027-01-15", "--out", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert rows == [
        {"member": "M1", "name": "Ann", "email": "m1@example.com", "status": "active",
         "date": "2027-02-10", "points": "300", "balance": "300"},
        {"member": "M2", "name": "", "email": "", "status": "active",
         "date": "2027-02-14", "points": "300", "balance": "700"},
    ]  # fmt: skip
    # The as-of day is left out: its own run takes those points.
    lines = cli(
        "expire", "notices", "--within", "1w", "--as-of", "2027-02-10", "--format", "jsonl"
    ).stdout
    assert [json.loads(line)["member"] for line in lines.splitlines()] == ["M2"]
    assert cli("expire", "notices", "--within", "soon", code=4).stderr.startswith("error:")


@freeze_time(NOW)
def test_notices_under_inactivity_give_the_members_due_date(cli: Cli, tmp_path: Path) -> None:
    load(cli, tmp_path, 'policy = "inactivity"\nmonths = 6')
    enroll(cli, "M1", "2027-01-01")
    enroll(cli, "M2", "2027-01-01")
    buy(cli, "M1", "T1", "10.00", "2027-08-31")
    buy(cli, "M2", "T2", "10.00", "2027-09-10")
    out = tmp_path / "due.jsonl"
    cli("expire", "notices", "--within", "30d", "--as-of", "2028-02-20", "--out", str(out))
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(r["member"], r["date"], r["points"]) for r in rows] == [
        ("M1", "2028-02-29", 100),
        ("M2", "2028-03-10", 100),
    ]


# ---- one runner: real processes ---------------------------------------------------------------


def _run(db_url: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(EXE), "--db", db_url, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _many_lots(cli: Cli, tmp_path: Path, members: int = 3, lots: int = 3) -> int:
    load(cli, tmp_path, 'policy = "rolling"\nmonths = 1')
    for m in range(members):
        enroll(cli, f"M{m}", "2025-01-01")
        for n in range(lots):
            buy(cli, f"M{m}", f"T{m}-{n}", "10.00", f"2025-01-{n + 2:02d}")
    return members * lots * 100


@pytest.mark.partitioned
def test_two_runs_at_once_expire_the_points_exactly_once(
    cli: Cli, tmp_path: Path, db_url: str, engine: Engine
) -> None:
    total = _many_lots(cli, tmp_path)
    runs = [_run(db_url, "expire", "--as-of", "2026-01-01", "--json") for _ in range(2)]
    results = []
    for proc in runs:
        out, errors = proc.communicate(timeout=60)
        assert proc.returncode == 0, errors
        results.append(json.loads(out))
    assert sorted(r["already_done"] for r in results) == [False, True]
    assert {r["points_expired"] for r in results} == {total}
    assert expired_points(engine) == total
    cli.check()


def test_a_second_runner_waits_then_exits_7_naming_the_holder_and_a_killed_run_is_redone(
    cli: Cli, tmp_path: Path, db_url: str, engine: Engine
) -> None:
    total = _many_lots(cli, tmp_path)
    stall = tmp_path / "stalled"
    holder = _run(
        db_url, "nightly", "--as-of", "2026-01-01", "--json",
        env={"LOYALTYCTL_TEST_STALL_FILE": str(stall), "LOYALTYCTL_EXPIRE_BATCH": "2"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not stall.exists():
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the first run never reached its first batch"
            time.sleep(0.05)
        # Half-way: 2 of 9 lots written, not committed.
        started = time.monotonic()
        waiter = _run(
            db_url, "expire", "--as-of", "2026-01-01", env={"LOYALTYCTL_BUSY_TIMEOUT": "1"}
        )
        out, errors = waiter.communicate(timeout=60)
        assert waiter.returncode == 7, errors
        assert time.monotonic() - started >= 1
        assert f"{holder.pid}@" in errors and "job lock" in errors
        assert out == ""
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=30)
    assert expired_points(engine) == 0
    assert job_runs(engine) == []
    cli.check()
    rerun = _run(db_url, "expire", "--as-of", "2026-01-01", "--json")
    out, errors = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, errors
    result = json.loads(out)
    assert (result["points_expired"], result["lots"], result["already_done"]) == (total, 9, False)
    assert expired_points(engine) == total
    cli.check()
