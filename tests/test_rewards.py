"""Rewards and vouchers: the catalogue, redemptions and their refusals, the voucher's life,
cancel refunds with original expiry, idempotent retries and the last item in stock under
two concurrent redeemers. Every scenario ends with a clean ``db check``."""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from loyaltyctl.services.rewards import (
    CODE_ALPHABET,
    expire_vouchers,
    new_voucher_code,
    normalize_code,
)
from loyaltyctl.store.models import Member, PointsLot, Txn, Voucher
from tests.conftest import Cli, write_program

LOYALTYCTL = Path(sys.executable).parent / "loyaltyctl"
CODE_RE = re.compile(r"[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}")

SHOP = """\
[program]
key = "shop"
name = "Shop Rewards"
currency = "USD"
timezone = "UTC"

[earn]
per_unit = 10
pending_days = {pending_days}

[expiry]
policy = "never"

[tiers]
metric = "points"

[[tiers.levels]]
key = "bronze"
min = 0

[[tiers.levels]]
key = "gold"
min = 100000

[[rewards]]
key = "mug"
name = "Branded mug"
cost = 100
stock = 1

[[rewards]]
key = "coffee"
name = "Free coffee"
cost = 50
per_member = 1
valid_days = 7

[[rewards]]
key = "lounge"
name = "Lounge pass"
cost = 10
tiers = ["gold"]

[[rewards]]
key = "fiver"
name = "5 off"
cost = 200
kind = "discount-amount"
value = "5.00"

[[rewards]]
key = "tenpct"
name = "10% off"
cost = 150
kind = "discount-percent"
value = 10

[[rewards]]
key = "latte"
name = "Free latte"
cost = 120
kind = "free-product"
product = "latte"
"""


def shop_program(tmp_path: Path, *, pending_days: int = 0, extra: str = "") -> Path:
    text = SHOP.replace("{pending_days}", str(pending_days)) + extra
    return write_program(tmp_path, text, "shop.toml")


@pytest.fixture
def shop(cli: Cli, tmp_path: Path) -> Cli:
    cli("program", "load", str(shop_program(tmp_path)))
    return cli


def seed(cli: Cli, member: str, points: int, *, at: str = "2026-01-01") -> None:
    """Enroll ``member`` and give it ``points`` that never expire."""
    when = ["--at", at]
    cli("member", "enroll", member, *when)
    if points:
        cli(
            "txn",
            "adjust",
            member,
            "--ref",
            f"seed-{member}",
            "--points",
            str(points),
            "--reason",
            "seed",
            *when,
        )


def balance(cli: Cli, member: str) -> int:
    value = cli.json("member", "show", member)["balance"]
    assert isinstance(value, int)
    return value


def refused(cli: Cli, *args: str, code: int = 6) -> str:
    result = cli(*args, code=code)
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    return str(result.stderr)


def lots_of(engine: Engine, member: str) -> list[tuple[str, date | None, int, int]]:
    """(kind, expires_on, points, remaining) of each of the member's lots, oldest first."""
    with Session(engine) as session:
        member_id = session.exec(select(Member.id).where(Member.code == member)).one()
        lots = session.exec(
            select(PointsLot).where(PointsLot.member_id == member_id).order_by(col(PointsLot.id))
        ).all()
        return [(lot.kind, lot.expires_on, lot.points, lot.remaining) for lot in lots]


def voucher_count(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(Voucher)).all())


# ---- the worked examples of docs/ledger.md -------------------------------------------------------


@pytest.mark.partitioned
def test_m1_redeem_cancel_refunds_into_lots_with_original_expiry(deli: Cli, engine: Engine) -> None:
    cli = deli
    with freeze_time("2026-01-05T09:00:00Z"):
        cli("member", "enroll", "M1", "--at", "2026-01-05")
    with freeze_time("2026-01-10T12:00:00Z"):
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
    with freeze_time("2026-06-06T12:00:00Z"):
        cli("txn", "post", "M1", "--ref", "T2", "--amount", "190.00", "--at", "2026-06-06")
    with freeze_time("2026-06-10T12:00:00Z"):
        cli("txn", "post", "M1", "--ref", "T3", "--amount", "10.00", "--at", "2026-06-10")
    with freeze_time("2026-06-12T12:00:00Z"):
        cli("txn", "return", "M1", "--ref", "R1", "--original", "T2", "--amount", "95.00")
    assert balance(cli, "M1") == 1261

    # Step 6: oldest-expiring first: signup 25, T1 224, then 151 of T2.
    with freeze_time("2026-06-15T11:00:00Z"):
        redeemed = cli.json("reward", "redeem", "M1", "sandwich")
    assert redeemed["points"] == -400
    assert redeemed["balance"] == 861
    assert redeemed["reward"] == "sandwich"
    assert redeemed["duplicate"] is False
    assert CODE_RE.fullmatch(redeemed["voucher"])
    assert redeemed["expires"] == "2026-07-15T11:00:00Z"  # valid_days = 30
    signup, t1, t2, t3 = lots_of(engine, "M1")
    assert (signup[1], signup[3]) == (date(2026, 7, 5), 0)
    assert (t1[1], t1[3]) == (date(2026, 7, 10), 0)
    assert (t2[1], t2[3]) == (date(2026, 12, 6), 799)
    assert t3[3] == 62
    cli.check()

    # Step 7: cancel: the same lots get their points back, with their own dates.
    with freeze_time("2026-07-01T10:00:00Z"):
        cancelled = cli.json("reward", "cancel", redeemed["voucher"])
    assert cancelled["points"] == 400
    assert cancelled["balance"] == 1261
    assert cancelled["ref"] == f"cancel:{redeemed['voucher']}"
    assert cancelled["lots"] == [
        {"expires_on": "2026-07-05", "points": 25},
        {"expires_on": "2026-07-10", "points": 224},
        {"expires_on": "2026-12-06", "points": 151},
    ]
    signup, t1, t2, _ = lots_of(engine, "M1")
    assert (signup[1], signup[3]) == (date(2026, 7, 5), 25)
    assert (t1[1], t1[3]) == (date(2026, 7, 10), 224)
    assert (t2[1], t2[3]) == (date(2026, 12, 6), 950)
    with freeze_time("2026-07-01T10:00:00Z"):
        shown = cli.json("voucher", "show", redeemed["voucher"])
    assert shown["status"] == "cancelled"
    assert shown["cancelled_at"] == "2026-07-01T10:00:00Z"
    cli.check()

    # Step 8: the refunded 25 + 224 reached their dates: cancelling cannot dodge expiry.
    due = [lot for lot in lots_of(engine, "M1") if lot[1] and lot[1] <= date(2026, 7, 11)]
    assert sum(lot[3] for lot in due) == 249
    if _has_expire_command(cli):
        with freeze_time("2026-07-12T02:00:00Z"):
            expired = cli.json("expire", "--as-of", "2026-07-11")
        assert expired["points_expired"] == 249
        assert balance(cli, "M1") == 1012
        assert [lot[3] for lot in lots_of(engine, "M1")] == [0, 0, 950, 62]
        cli.check()


def _has_expire_command(cli: Cli) -> bool:
    return cli("expire", "--help", code=None).exit_code == 0


@pytest.mark.partitioned
def test_m2_redeem_then_return_leaves_a_debt_the_next_purchase_settles(
    deli: Cli, engine: Engine
) -> None:
    cli = deli
    with freeze_time("2026-02-01T12:00:00Z"):
        cli("member", "enroll", "M2")
    with freeze_time("2026-02-02T12:00:00Z"):
        cli("txn", "post", "M2", "--ref", "T4", "--amount", "20.00")
    with freeze_time("2026-02-03T12:00:00Z"):
        redeemed = cli.json("reward", "redeem", "M2", "cookie", "--ref", "C1")
    assert (redeemed["points"], redeemed["balance"]) == (-100, 25)
    assert [lot[3] for lot in lots_of(engine, "M2")] == [0, 25]
    with freeze_time("2026-02-04T12:00:00Z"):
        returned = cli.json(
            "txn", "return", "M2", "--ref", "R2", "--original", "T4", "--amount", "20.00"
        )
    assert (returned["points"], returned["balance"]) == (-100, -75)
    with freeze_time("2026-02-05T12:00:00Z"):
        posted = cli.json("txn", "post", "M2", "--ref", "T5", "--amount", "30.00")
        assert cli.json("member", "show", "M2")["available"] == 75
    assert (posted["points"], posted["balance"]) == (150, 75)
    assert lots_of(engine, "M2")[-1][2:] == (75, 75)
    cli.check()


def test_cancel_after_a_return_settles_the_debt_first(deli: Cli, engine: Engine) -> None:
    cli = deli
    with freeze_time("2026-02-01T12:00:00Z"):
        cli("member", "enroll", "M2")
        cli("txn", "post", "M2", "--ref", "T4", "--amount", "20.00")
        voucher = cli.json("reward", "redeem", "M2", "cookie")["voucher"]
        cli("txn", "return", "M2", "--ref", "R2", "--original", "T4", "--amount", "20.00")
        assert balance(cli, "M2") == -75
        cancelled = cli.json("reward", "cancel", voucher)
    assert cancelled["balance"] == 25
    assert cancelled["debt_settled"] == 75
    assert cancelled["lots"] == [{"expires_on": "2026-08-01", "points": 25}]
    assert cli.json("member", "show", "M2")["debt"] == 0
    cli.check()


# ---- refusals --------------------------------------------------------------------------


def test_unknown_reward_member_and_voucher_are_not_found(shop: Cli) -> None:
    seed(shop, "A", 1000)
    assert "reward nope not found in program shop" in refused(
        shop, "reward", "redeem", "A", "nope", code=3
    )
    assert "member ZZ not found" in refused(shop, "reward", "redeem", "ZZ", "mug", code=3)
    assert "voucher ABCD-EFGH-JKMN not found" in refused(
        shop, "voucher", "show", "ABCD-EFGH-JKMN", code=3
    )
    refused(shop, "reward", "use", "ABCD-EFGH-JKMN", code=3)
    refused(shop, "reward", "cancel", "ABCD-EFGH-JKMN", code=3)
    refused(shop, "reward", "list", "--member", "ZZ", code=3)
    refused(shop, "voucher", "list", "--status", "lost", code=4)
    shop.check()


def test_suspended_and_closed_members_cannot_redeem(shop: Cli, engine: Engine) -> None:
    seed(shop, "A", 1000)
    seed(shop, "B", 1000)
    shop("member", "suspend", "A", "--reason", "fraud check")
    shop("member", "close", "B")
    message = refused(shop, "reward", "redeem", "A", "coffee")
    assert "member A is suspended and cannot redeem rewards" in message
    assert "loyaltyctl member reactivate A" in message
    assert "member B is closed" in refused(shop, "reward", "redeem", "B", "coffee")
    assert voucher_count(engine) == 0
    assert balance(shop, "A") == balance(shop, "B") == 1000
    shop("member", "reactivate", "A")
    shop("reward", "redeem", "A", "coffee")
    shop.check()


def test_a_reward_for_other_tiers_is_refused(shop: Cli) -> None:
    seed(shop, "A", 1000)
    message = refused(shop, "reward", "redeem", "A", "lounge")
    assert "reward lounge is only for tier gold; member A is bronze" in message
    listed = {r["reward"]: r for r in shop.json("reward", "list", "--member", "A")}
    assert listed["lounge"]["allowed"] is False
    assert listed["lounge"]["affordable"] is True
    assert listed["lounge"]["why_not"] == [
        "reward lounge is only for tier gold; member A is bronze"
    ]
    shop.check()


def test_insufficient_points_are_refused_and_nothing_changes(shop: Cli, engine: Engine) -> None:
    seed(shop, "A", 99)
    message = refused(shop, "reward", "redeem", "A", "mug", "--ref", "X1")
    assert "insufficient points: reward mug costs 100, member A has 99 available" in message
    assert "1 more points are needed" in message
    assert balance(shop, "A") == 99
    assert voucher_count(engine) == 0
    # The refused ref was not used up.
    shop("txn", "adjust", "A", "--ref", "more", "--points", "1", "--reason", "top up")
    assert shop.json("reward", "redeem", "A", "mug", "--ref", "X1")["balance"] == 0
    shop.check()


def test_pending_points_cannot_be_spent_until_their_days_pass(
    cli: Cli, tmp_path: Path, engine: Engine
) -> None:
    cli("program", "load", str(shop_program(tmp_path, pending_days=7)))
    with freeze_time("2026-03-01T12:00:00Z"):
        cli("member", "enroll", "A")
        cli("txn", "post", "A", "--ref", "P1", "--amount", "30.00")  # 300 points, pending
        message = refused(cli, "reward", "redeem", "A", "coffee")
        assert "member A has 0 available (300 more pending, not yet spendable)" in message
        listed = {r["reward"]: r for r in cli.json("reward", "list", "--member", "A")}
        assert listed["coffee"]["affordable"] is False
    with freeze_time("2026-03-08T12:00:01Z"):
        result = cli.json("reward", "redeem", "A", "coffee")
    assert result["balance"] == 250
    cli.check()


def test_stock_runs_out_and_a_cancelled_voucher_returns_its_item(shop: Cli) -> None:
    seed(shop, "A", 1000)
    seed(shop, "B", 1000)
    first = shop.json("reward", "redeem", "A", "mug")
    listed = {r["reward"]: r for r in shop.json("reward", "list", "--member", "B")}
    assert (listed["mug"]["stock"], listed["mug"]["stock_left"]) == (1, 0)
    assert listed["mug"]["why_not"] == ["reward mug is out of stock (all 1 issued)"]
    assert "reward mug is out of stock" in refused(shop, "reward", "redeem", "B", "mug")
    assert balance(shop, "B") == 1000
    shop("reward", "cancel", first["voucher"])
    assert shop.json("reward", "list")[0]["stock_left"] == 1
    second = shop.json("reward", "redeem", "B", "mug")
    # A used voucher keeps its item out of stock.
    shop("reward", "use", second["voucher"])
    refused(shop, "reward", "redeem", "A", "mug")
    shop.check()


def test_per_member_counts_live_vouchers_only(shop: Cli) -> None:
    seed(shop, "A", 1000)
    seed(shop, "B", 1000)
    with freeze_time("2026-04-01T12:00:00Z"):
        first = shop.json("reward", "redeem", "A", "coffee")
        message = refused(shop, "reward", "redeem", "A", "coffee")
        assert "member A already holds 1 live voucher for reward coffee" in message
        assert "per_member = 1" in message
        # Another member has its own limit.
        shop("reward", "redeem", "B", "coffee")
        # Used: no longer live.
        shop("reward", "use", first["voucher"])
        second = shop.json("reward", "redeem", "A", "coffee")
        refused(shop, "reward", "redeem", "A", "coffee")
        # Cancelled: no longer live.
        shop("reward", "cancel", second["voucher"])
        shop("reward", "redeem", "A", "coffee")
    # Past its date (7 days), even before the nightly job marks it: no longer live.
    with freeze_time("2026-04-08T12:00:00Z"):
        shop("reward", "redeem", "A", "coffee")
        assert balance(shop, "A") == 1000 - 50 * 3
    shop.check()


def test_reward_list_shows_terms_and_why_not(shop: Cli) -> None:
    listed = shop.json("reward", "list")
    assert [r["reward"] for r in listed] == ["mug", "coffee", "lounge", "fiver", "tenpct", "latte"]
    fiver = listed[3]
    assert (fiver["kind"], fiver["value"], fiver["cost"]) == ("discount-amount", "5.00", 200)
    assert listed[5]["product"] == "latte"
    assert listed[0]["member"] is None and listed[0]["redeemable"] is None
    seed(shop, "A", 120)
    shop("member", "suspend", "A")
    mine = {r["reward"]: r for r in shop.json("reward", "list", "--member", "A")}
    assert mine["latte"]["affordable"] is True and mine["latte"]["allowed"] is False
    assert mine["fiver"]["why_not"] == [
        "member A is suspended and cannot redeem rewards",
        "insufficient points: reward fiver costs 200, member A has 120 available",
    ]
    text = shop("reward", "list", "--member", "A").stdout
    assert "Branded mug" in text and "1 of 1" in text and "10% off" in text
    assert shop("reward", "list").stdout.count("unlimited") == 5


# ---- idempotency -----------------------------------------------------------------------


@pytest.mark.partitioned
def test_identical_redeem_retry_returns_the_original(shop: Cli, engine: Engine) -> None:
    seed(shop, "A", 1000)
    first = shop.json("reward", "redeem", "A", "fiver", "--ref", "POS-1")
    again = shop.json("reward", "redeem", "A", "fiver", "--ref", "POS-1")
    assert again == {**first, "duplicate": True}
    assert balance(shop, "A") == 800
    assert voucher_count(engine) == 1
    at = shop.json("voucher", "show", first["voucher"])["issued_at"]
    shop("reward", "redeem", "A", "fiver", "--ref", "POS-1", "--at", at)
    # A retry after the voucher was used still reports the original redemption.
    shop("reward", "use", first["voucher"])
    used = shop.json("reward", "redeem", "A", "fiver", "--ref", "POS-1")
    assert (used["duplicate"], used["status"], used["balance"]) == (True, "used", 800)
    shop.check()


@pytest.mark.partitioned
def test_a_reused_redeem_ref_with_other_data_is_a_conflict(shop: Cli, engine: Engine) -> None:
    seed(shop, "A", 1000)
    seed(shop, "B", 1000)
    shop("reward", "redeem", "A", "fiver", "--ref", "POS-1", "--at", "2026-05-01")
    assert "reference POS-1 was already used" in refused(
        shop, "reward", "redeem", "A", "latte", "--ref", "POS-1", code=5
    )
    refused(shop, "reward", "redeem", "B", "fiver", "--ref", "POS-1", code=5)
    refused(shop, "reward", "redeem", "A", "fiver", "--ref", "POS-1", "--at", "2026-05-02", code=5)
    refused(shop, "reward", "redeem", "A", "fiver", "--ref", "seed-A", code=5)
    assert voucher_count(engine) == 1
    assert balance(shop, "A") == 800
    shop.check()


def test_redeem_without_ref_makes_a_new_one_each_time(shop: Cli) -> None:
    seed(shop, "A", 1000)
    first = shop.json("reward", "redeem", "A", "latte")
    second = shop.json("reward", "redeem", "A", "latte")
    assert first["ref"] != second["ref"] and first["ref"].startswith("redeem-")
    assert first["voucher"] != second["voucher"]
    assert second["balance"] == 760
    refused(shop, "reward", "redeem", "A", "latte", "--ref", "  ", code=4)
    shop.check()


# ---- the voucher's life ----------------------------------------------------------------


@pytest.mark.partitioned
def test_use_then_every_further_action_is_refused(shop: Cli) -> None:
    seed(shop, "A", 1000)
    with freeze_time("2026-05-01T09:00:00Z"):
        code = shop.json("reward", "redeem", "A", "tenpct")["voucher"]
    with freeze_time("2026-05-02T09:30:00Z"):
        # Codes are read back in any case, with or without dashes.
        used = shop.json("reward", "use", code.lower().replace("-", ""))
        assert (used["code"], used["status"], used["used_at"]) == (
            code,
            "used",
            "2026-05-02T09:30:00Z",
        )
        assert "was already used on 2026-05-02" in refused(shop, "reward", "use", code)
        assert "cannot be cancelled" in refused(shop, "reward", "cancel", code)
        text = shop("voucher", "show", code).stdout
        assert "used" in text and "10% off" in text
    assert balance(shop, "A") == 850
    shop.check()


def test_cancel_is_only_for_issued_vouchers_and_repeats_harmlessly(shop: Cli) -> None:
    seed(shop, "A", 1000)
    code = shop.json("reward", "redeem", "A", "fiver")["voucher"]
    first = shop.json("reward", "cancel", code)
    assert (first["points"], first["balance"], first["duplicate"]) == (200, 1000, False)
    again = shop.json("reward", "cancel", code)
    assert again == {**first, "duplicate": True}
    assert balance(shop, "A") == 1000
    assert "was cancelled and cannot be used" in refused(shop, "reward", "use", code)
    assert shop.json("voucher", "show", code)["cancel_ref"] == f"cancel:{code}"
    txns = shop.json("txn", "list", "A")
    assert [t["kind"] for t in txns] == ["adjust", "redeem", "refund"]
    shop.check()


def test_a_voucher_past_its_date_is_refused_at_once(shop: Cli) -> None:
    seed(shop, "A", 1000)
    with freeze_time("2026-05-01T09:00:00Z"):
        code = shop.json("reward", "redeem", "A", "coffee")["voucher"]
    with freeze_time("2026-05-08T08:59:59Z"):
        assert shop.json("voucher", "show", code)["status"] == "issued"
    with freeze_time("2026-05-08T09:00:00Z"):
        assert "expired on 2026-05-08T09:00:00+00:00" in refused(shop, "reward", "use", code)
        shown = shop.json("voucher", "show", code)
        assert (shown["status"], shown["expired_at"]) == ("expired", None)
        assert [v["code"] for v in shop.json("voucher", "list", "--status", "expired")] == [code]
        assert shop.json("voucher", "list", "--status", "issued") == []
    assert balance(shop, "A") == 950
    shop.check()


def test_a_voucher_past_its_date_can_be_cancelled_until_the_nightly_job_expires_it(
    shop: Cli,
) -> None:
    seed(shop, "A", 1000)
    seed(shop, "B", 1000)
    with freeze_time("2026-05-01T09:00:00Z"):
        late = shop.json("reward", "redeem", "A", "coffee")["voucher"]
        gone = shop.json("reward", "redeem", "B", "coffee")["voucher"]
    with freeze_time("2026-05-09T09:00:00Z"):
        # The refund goes back to lots that keep their expiry dates: nothing is dodged.
        assert shop.json("reward", "cancel", late)["points"] == 50
        shop("nightly", "--as-of", "2026-05-09")
        assert shop.json("voucher", "show", gone)["status"] == "expired"
        assert "expired" in refused(shop, "reward", "cancel", gone)
    assert (balance(shop, "A"), balance(shop, "B")) == (1000, 950)
    shop.check()


def test_voucher_show_and_list(shop: Cli) -> None:
    seed(shop, "A", 1000)
    seed(shop, "B", 1000)
    with freeze_time("2026-05-01T09:00:00Z"):
        latte = shop.json("reward", "redeem", "A", "latte", "--ref", "L1")["voucher"]
    with freeze_time("2026-05-02T09:00:00Z"):
        fiver = shop.json("reward", "redeem", "B", "fiver")["voucher"]
        tenpct = shop.json("reward", "redeem", "A", "tenpct")["voucher"]
        shop("reward", "use", tenpct)
        shown = shop.json("voucher", "show", latte)
    assert shown == {
        "code": latte,
        "reward": "latte",
        "name": "Free latte",
        "member": "A",
        "status": "issued",
        "kind": "free-product",
        "value": None,
        "product": "latte",
        "points": 120,
        "issued_at": "2026-05-01T09:00:00Z",
        "expires_at": "2026-05-31T09:00:00Z",
        "used_at": None,
        "cancelled_at": None,
        "expired_at": None,
        "ref": "L1",
        "cancel_ref": None,
    }
    with freeze_time("2026-05-02T09:00:00Z"):
        assert [v["code"] for v in shop.json("voucher", "list")] == [tenpct, fiver, latte]
        assert [v["code"] for v in shop.json("voucher", "list", "--member", "A")] == [tenpct, latte]
        assert [v["code"] for v in shop.json("voucher", "list", "--status", "used")] == [tenpct]
        issued = shop.json("voucher", "list", "--member", "A", "--status", "issued")
        assert [v["code"] for v in issued] == [latte]
        text = shop("voucher", "show", fiver).stdout
    assert "5.00 off" in text and "B" in text
    assert shop.json("voucher", "list", "--member", "B", "--status", "cancelled") == []


# ---- program versions ------------------------------------------------------------------


def test_a_repriced_or_removed_reward_keeps_issued_vouchers_at_old_terms(
    cli: Cli, tmp_path: Path
) -> None:
    with freeze_time("2026-05-01T09:00:00Z"):
        cli("program", "load", str(shop_program(tmp_path)))
        seed(cli, "A", 1000)
        fiver = cli.json("reward", "redeem", "A", "fiver")["voucher"]
        latte = cli.json("reward", "redeem", "A", "latte")["voucher"]
    v2 = (
        SHOP.replace("{pending_days}", "0")
        .replace(
            'cost = 200\nkind = "discount-amount"\nvalue = "5.00"',
            'cost = 300\nkind = "discount-amount"\nvalue = "7.50"',
        )
        .replace(
            '[[rewards]]\nkey = "latte"\nname = "Free latte"\ncost = 120\n'
            'kind = "free-product"\nproduct = "latte"\n',
            "",
        )
    )
    with freeze_time("2026-05-02T09:00:00Z"):
        cli("program", "load", str(write_program(tmp_path, v2, "v2.toml")))
        listed = {r["reward"]: r for r in cli.json("reward", "list")}
        assert "latte" not in listed and listed["fiver"]["cost"] == 300
        shown = cli.json("voucher", "show", fiver)
        assert (shown["points"], shown["value"]) == (200, "5.00")
        assert cli.json("reward", "use", latte)["product"] == "latte"
        # Cancelling refunds what was paid, not the new price.
        assert cli.json("reward", "cancel", fiver)["points"] == 200
        refused(cli, "reward", "redeem", "A", "latte", code=3)
        assert cli.json("reward", "redeem", "A", "fiver")["points"] == -300
    assert balance(cli, "A") == 1000 - 120 - 300
    cli.check()


# ---- the nightly job's part -----------------------------------------------------------


@pytest.mark.partitioned
def test_expire_vouchers_marks_due_ones_once_and_refunds_nothing(shop: Cli, engine: Engine) -> None:
    from loyaltyctl.services.context import load_context

    seed(shop, "A", 1000)
    with freeze_time("2026-05-01T09:00:00Z"):
        due = shop.json("reward", "redeem", "A", "coffee")["voucher"]  # 7 days
        later = shop.json("reward", "redeem", "A", "fiver")["voucher"]  # 30 days
        used = shop.json("reward", "redeem", "A", "latte")["voucher"]
        shop("reward", "use", used)
    run_at = datetime(2026, 5, 9, 2, 0, tzinfo=UTC)
    with Session(engine) as session:
        ctx = load_context(session, "shop")
        end = datetime(2026, 5, 9, tzinfo=UTC)
        assert expire_vouchers(session, ctx, as_of_end=end, now=run_at) == 1
        assert expire_vouchers(session, ctx, as_of_end=end, now=run_at) == 0
        session.commit()
    with freeze_time(run_at):
        shown = shop.json("voucher", "show", due)
        assert (shown["status"], shown["expired_at"]) == ("expired", "2026-05-09T02:00:00Z")
        assert shop.json("voucher", "show", later)["status"] == "issued"
        assert shop.json("voucher", "show", used)["status"] == "used"
        assert "cannot be used" in refused(shop, "reward", "use", due)
    assert balance(shop, "A") == 1000 - 50 - 200 - 120
    shop.check()


# ---- codes -----------------------------------------------------------------------------


def test_voucher_codes_are_readable_and_random() -> None:
    assert not set("01OIL") & set(CODE_ALPHABET)
    codes = {new_voucher_code() for _ in range(2000)}
    assert len(codes) == 2000
    assert all(CODE_RE.fullmatch(code) for code in codes)
    assert normalize_code(" abcd efgh-jkmn ") == "ABCD-EFGH-JKMN"
    assert normalize_code("not-a-code") == "not-a-code"


# ---- concurrency -----------------------------------------------------------------------


def _redeem_and_hold(url: str, member: str, reward: str, ready: Any, hold: float) -> None:
    """Redeem in a transaction held open for ``hold`` seconds after the stock was counted
    (runs in a child process)."""
    import time

    from loyaltyctl.services.context import load_context
    from loyaltyctl.services.redemptions import redeem
    from loyaltyctl.store.db import make_engine, session_scope

    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            ctx = load_context(session, None)
            redeem(session, ctx, member, reward, ref=None, at=None, now=datetime.now(UTC))
            ready.set()
            time.sleep(hold)
    finally:
        engine.dispose()


def test_the_last_item_goes_to_one_of_two_overlapping_redeemers(
    shop: Cli, db_url: str, engine: Engine
) -> None:
    """B counts the stock while A's redemption of the last item is still uncommitted:
    B must wait for A and then be refused."""
    seed(shop, "A", 1000)
    seed(shop, "B", 1000)
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    holder = spawn.Process(target=_redeem_and_hold, args=(db_url, "A", "mug", ready, 1.0))
    holder.start()
    try:
        assert ready.wait(60), "the first redeemer never got going"
        assert "out of stock" in refused(shop, "reward", "redeem", "B", "mug")
    finally:
        holder.join(60)
    assert holder.exitcode == 0
    vouchers = shop.json("voucher", "list")
    assert [(v["member"], v["reward"]) for v in vouchers] == [("A", "mug")]
    assert (balance(shop, "A"), balance(shop, "B")) == (900, 1000)
    shop.check()


def test_two_loyaltyctl_processes_race_for_the_last_item(shop: Cli, db_url: str) -> None:
    seed(shop, "A", 1000)
    seed(shop, "B", 1000)
    procs = [
        subprocess.Popen(
            [str(LOYALTYCTL), "--db", db_url, "reward", "redeem", member, "mug", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for member in ("A", "B")
    ]
    outcomes = [(proc.wait(60), proc.stderr.read() if proc.stderr else "") for proc in procs]
    for proc in procs:
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    assert sorted(code for code, _ in outcomes) == [0, 6], outcomes
    assert any("out of stock" in message for code, message in outcomes if code == 6)
    assert len(shop.json("voucher", "list")) == 1
    assert sorted([balance(shop, "A"), balance(shop, "B")]) == [900, 1000]
    shop.check()


def test_the_redeem_transaction_records_the_cost(shop: Cli, engine: Engine) -> None:
    seed(shop, "A", 1000)
    shop("reward", "redeem", "A", "fiver", "--ref", "POS-9")
    with Session(engine) as session:
        txn = session.exec(select(Txn).where(Txn.ref == "POS-9")).one()
        voucher = session.exec(select(Voucher).where(Voucher.txn_id == txn.id)).one()
    assert (txn.kind, txn.points, txn.balance_after) == ("redeem", -200, 800)
    assert voucher.points == 200
    assert voucher.expires_at - voucher.issued_at == timedelta(days=30)
    shop.check()
