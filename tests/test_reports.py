"""``report summary``: contract fields, the points identity, and past reports that never
change when later activity arrives."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from freezegun import freeze_time

from tests.conftest import Cli
from tests.test_statements import (  # noqa: F401  (sessions is a fixture)
    M1_STEPS,
    at,
    cancel_voucher,
    expire_due,
    redeem_points,
    sessions,
)

CONTRACT = (
    "members",
    "active_members",
    "points_issued",
    "points_redeemed",
    "points_expired",
    "points_outstanding",
    "liability",
    "redemption_rate",
    "breakage_rate",
    "tiers",
)
POINT_FIGURES = (
    "points_issued",
    "points_redeemed",
    "points_expired",
    "points_outstanding",
    "points_clawed_back",
    "points_adjusted_in",
    "points_adjusted_out",
    "points_refunded",
    "points_debt",
)


def report(cli: Cli, *args: str, when: str = "2026-07-20T09:00:00Z") -> Any:
    with freeze_time(when):
        return cli.json("report", "summary", *args)


@pytest.fixture
def history(deli: Cli, sessions: Any) -> Cli:  # noqa: F811
    """M1 of docs/ledger.md, M2 (a return after spending: a debt, then settled), adjustments,
    a cancelled voucher and an expiry run."""
    for when, args in M1_STEPS:
        at(deli, when, *args)
    at(deli, "2026-02-01T12:00:00Z", "member", "enroll", "M2")
    at(deli, "2026-02-02T12:00:00Z", "txn", "post", "M2", "--ref", "T4", "--amount", "20.00")
    moment = datetime(2026, 2, 3, 12, tzinfo=UTC)
    with freeze_time(moment), sessions() as session:
        redeem_points(session, "M2", 100, when=moment, now=moment, voucher="V-M2")
    at(
        deli,
        "2026-02-04T12:00:00Z",
        "txn",
        "return",
        "M2",
        "--ref",
        "R2",
        "--original",
        "T4",
        "--amount",
        "20.00",
    )
    at(deli, "2026-02-05T12:00:00Z", "txn", "post", "M2", "--ref", "T5", "--amount", "30.00")
    at(
        deli,
        "2026-03-01T12:00:00Z",
        "txn",
        "adjust",
        "M1",
        "--ref",
        "A+",
        "--points",
        "50",
        "--reason",
        "goodwill",
    )
    at(
        deli,
        "2026-03-02T12:00:00Z",
        "txn",
        "adjust",
        "M1",
        "--ref",
        "A-",
        "--points",
        "-20",
        "--reason",
        "correction",
    )
    moment = datetime(2026, 6, 15, 12, tzinfo=UTC)
    with freeze_time(moment), sessions() as session:
        redeem_points(session, "M1", 400, when=moment, now=moment, voucher="V-SAND", valid_days=30)
    moment = datetime(2026, 7, 1, 12, tzinfo=UTC)
    with freeze_time(moment), sessions() as session:
        cancel_voucher(session, "V-SAND", now=moment)
    moment = datetime(2026, 7, 11, 23, tzinfo=UTC)
    with freeze_time(moment), sessions() as session:
        expire_due(session, date(2026, 7, 11), now=moment)
    return deli


def assert_identity(doc: dict[str, Any]) -> None:
    into = doc["points_issued"] + doc["points_adjusted_in"]
    out = (
        doc["points_redeemed"]
        + doc["points_expired"]
        + doc["points_clawed_back"]
        + doc["points_adjusted_out"]
    )
    assert into - out == doc["points_outstanding"] - doc["points_debt"]


@pytest.mark.partitioned
def test_contract_fields_and_figures(history: Cli) -> None:
    doc = report(history, "--as-of", "2026-07-12")
    for key in CONTRACT:
        assert key in doc
    for key in POINT_FIGURES:
        assert isinstance(doc[key], int) and doc[key] >= 0, key
    for key in ("redemption_rate", "breakage_rate"):
        assert 0 <= doc[key] <= 1
    assert_identity(doc)
    balances = [history.json("member", "show", code)["balance"] for code in ("M1", "M2")]
    assert doc["points_outstanding"] == sum(balances) and doc["points_debt"] == 0
    assert doc["members"] == 2
    # issued: M1 25 + 224 + 1900 + 62, M2 25 + 100 + 150
    assert doc["points_issued"] == 2486
    assert doc["points_redeemed"] == 100  # V-SAND's 400 came back when it was cancelled
    assert doc["points_refunded"] == 400
    assert doc["points_clawed_back"] == 950 + 100
    assert (doc["points_adjusted_in"], doc["points_adjusted_out"]) == (50, 20)
    assert doc["points_expired"] > 0
    assert doc["redemption_rate"] == round(100 / 2486, 6)
    assert doc["breakage_rate"] == round(doc["points_expired"] / 2486, 6)
    value = Decimal(doc["points_outstanding"]) * Decimal("0.005")
    assert Decimal(doc["liability"]) == value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    assert doc["tiers"] == {"bronze": 1, "silver": 1}
    assert doc["active_members"] == 1  # M1 bought in June; M2 last in February
    history.check()


def test_active_members_and_new_members(history: Cli) -> None:
    doc = report(history, "--as-of", "2026-07-12", "--from", "2026-02-01", "--to", "2026-02-28")
    # M2's last purchase (2026-02-05) is more than 90 days before 2026-07-12.
    assert doc["active_members"] == 1
    assert doc["new_members"] == 1 and doc["period"]["new_members"] == 1
    assert doc["period"]["from"] == "2026-02-01"
    assert doc["period"]["points_issued"] == 25 + 100 + 150
    assert doc["period"]["points_clawed_back"] == 100
    # The 90 days ending on 2026-04-01 start on 2026-01-02: T1 (2026-01-10) counts.
    april = report(history, "--as-of", "2026-04-01")
    assert april["active_members"] == 2
    assert april["period"]["from"] == "2026-04-01" and april["new_members"] == 0


def test_debt_is_not_outstanding(history: Cli) -> None:
    doc = report(history, "--as-of", "2026-02-04")
    # M2 returned T4 after spending its points: 75 owed; M1 holds 249.
    assert doc["points_debt"] == 75
    assert doc["points_outstanding"] == 249
    assert_identity(doc)


@pytest.mark.partitioned
def test_past_report_is_unchanged_by_later_activity(history: Cli) -> None:
    before = report(history, "--as-of", "2026-06-30", when="2026-07-02T09:00:00Z")
    assert before["tiers"] == {"bronze": 1, "silver": 1}
    at(history, "2026-07-03T10:00:00Z", "txn", "post", "M2", "--ref", "BIG", "--amount", "300.00")
    assert history.json("member", "show", "M2")["tier"] == "silver"
    after = report(history, "--as-of", "2026-06-30", when="2026-08-01T09:00:00Z")
    assert after == before
    # History migrated in later with past dates belongs to the dates it happened on.
    at(
        history,
        "2026-07-03T11:00:00Z",
        "txn",
        "post",
        "M1",
        "--ref",
        "LATE",
        "--amount",
        "40.00",
        "--at",
        "2026-06-20T12:00",
    )
    at(history, "2026-07-03T12:00:00Z", "member", "enroll", "M3", "--at", "2026-03-01")
    at(
        history,
        "2026-07-03T12:00:00Z",
        "txn",
        "adjust",
        "M3",
        "--ref",
        "A3",
        "--points",
        "5",
        "--reason",
        "welcome",
        "--at",
        "2026-03-02",
    )
    backfilled = report(history, "--as-of", "2026-06-30", when="2026-08-01T09:00:00Z")
    assert backfilled["members"] == before["members"] + 1
    assert backfilled["points_issued"] > before["points_issued"]
    assert_identity(backfilled)
    today = report(history, when="2026-08-01T09:00:00Z")
    assert today["members"] == 3 and today["tiers"] == {"bronze": 1, "silver": 2}
    assert_identity(today)


def test_plain_table_and_bad_input(history: Cli) -> None:
    with freeze_time("2026-07-20T09:00:00Z"):
        text = history("report", "summary", "--as-of", "2026-07-12").stdout
        assert "points outstanding" in text and "liability" in text and "USD" in text
        history("report", "summary", "--from", "2026-02-01", code=4)
        history(
            "report",
            "summary",
            "--from",
            "2026-02-01",
            "--to",
            "2026-08-01",
            "--as-of",
            "2026-07-01",
            code=4,
        )
        history("report", "summary", "--as-of", "yesterday", code=4)


def test_empty_program(deli: Cli) -> None:
    doc = report(deli)
    assert doc["members"] == 0 and doc["redemption_rate"] == 0 and doc["liability"] == "0.00"
    assert doc["tiers"] == {"bronze": 0, "silver": 0}
