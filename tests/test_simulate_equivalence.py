"""Simulating the loaded program itself changes nothing: random histories built through
the services (enrolments with opening balances, purchases of one and several lines,
returns, adjustments, redemptions, cancellations, a second version loaded part-way,
expiry runs and tier reviews on chosen days) are replayed by ``program simulate`` with
the program's latest version from when it was loaded: every delta is 0 and no member
differs. This is what proves the in-memory expiry and tier review agree with the SQL
jobs, and the replay with the ledger."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from loyaltyctl.errors import LoyaltyError
from loyaltyctl.ledger.requests import MemberRow
from loyaltyctl.rules.earning import Line
from loyaltyctl.rules.money import parse_amount
from loyaltyctl.rules.program_parse import parse_program
from loyaltyctl.rules.timeutil import parse_when
from loyaltyctl.services.context import load_context
from loyaltyctl.services.imports.member_rows import MemberImporter
from loyaltyctl.services.jobs import run_expire
from loyaltyctl.services.programs import load_program
from loyaltyctl.services.redemptions import cancel_voucher, redeem
from loyaltyctl.services.simulate import simulate
from loyaltyctl.services.tier_review import review_tiers
from loyaltyctl.services.txns import post_adjustment, post_purchase, post_return
from loyaltyctl.store.db import make_engine, session_scope
from tests.test_engine_equivalence import KEY, PROGRAM, TZ, fresh_databases, program_params

START = datetime(2024, 1, 8, 10, 0)
END = datetime(2027, 6, 1, 12, tzinfo=UTC)
MEMBERS = ("M1", "M2", "M3", "M4")


def _program(spec: dict[str, Any], hold: int, downgrade: str) -> str:
    text = PROGRAM.format(key=KEY, **spec)
    return text.replace(
        'window = "rolling-12-months"',
        f'window = "rolling-12-months"\nhold_months = {hold}\ndowngrade = "{downgrade}"',
    )


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    """Operations in time order; a nightly run starts a new day (as cron runs it early
    in the morning), and later operations of that day come after it."""
    hold = draw(st.sampled_from([0, 1, 2]))
    downgrade = draw(st.sampled_from(["one-level", "to-qualified"]))
    v1 = _program(draw(program_params), hold, downgrade)
    v2 = _program(draw(program_params), hold, downgrade)
    ops: list[dict[str, Any]] = []
    moment = START
    enrolled: list[str] = []
    purchases: list[list[Any]] = []
    redemptions: list[str] = []
    v2_loaded = False
    for i in range(draw(st.integers(min_value=15, max_value=40))):
        kind = "enroll" if not enrolled else None
        if kind is None:
            choices = ["purchase"] * 6 + ["multi", "adjust", "redeem", "redeem"]
            choices += ["expire", "review", "review"]
            choices += ["enroll"] if len(enrolled) < len(MEMBERS) else []
            choices += ["return", "return"] if purchases else []
            choices += ["cancel"] if redemptions else []
            choices += [] if v2_loaded else ["load_v2"]
            kind = draw(st.sampled_from(choices))
        if kind in ("expire", "review"):
            days = draw(st.sampled_from([1, 1, 5, 20, 40]))
            moment = datetime.combine(moment.date() + timedelta(days=days), datetime.min.time())
            moment += timedelta(hours=5)
        else:
            days = draw(st.sampled_from([0, 0, 1, 3, 8, 15, 30]))
            moment += timedelta(days=days, minutes=draw(st.integers(min_value=7, max_value=300)))
            if moment.hour < 4:
                moment += timedelta(hours=5)
        op: dict[str, Any] = {"op": kind, "at": moment.isoformat(timespec="minutes")}
        if kind == "enroll":
            op["member"] = MEMBERS[len(enrolled)]
            enrolled.append(op["member"])
            op["opening"] = draw(st.sampled_from([0, 0, 120, 800]))
            if op["opening"] and draw(st.booleans()):
                op["expires"] = moment.date() + timedelta(days=draw(st.integers(20, 400)))
        elif kind in ("purchase", "multi"):
            count = 1 if kind == "purchase" else draw(st.integers(min_value=2, max_value=3))
            op["lines"] = [
                (
                    draw(st.sampled_from(["", "", "beans", "gift"])),
                    f"{draw(st.integers(1, 400))}.{draw(st.integers(0, 99)):02d}",
                )
                for _ in range(count)
            ]
            op.update(op="purchase", member=draw(st.sampled_from(enrolled)), ref=f"P{i}")
            purchases.append([op["ref"], op["member"]])
        elif kind == "return":
            ref, member = draw(st.sampled_from(purchases))
            op.update(member=member, ref=f"R{i}", original=ref)
            op["amount"] = draw(st.sampled_from(["1.00", "25.00", "60.00", "400.00"]))
        elif kind == "adjust":
            op.update(member=draw(st.sampled_from(enrolled)), ref=f"A{i}")
            op["points"] = draw(st.sampled_from([25, 300, 1000, -40, -250]))
        elif kind == "redeem":
            op.update(member=draw(st.sampled_from(enrolled)), ref=f"V{i}")
            op["reward"] = draw(st.sampled_from(["coffee", "coffee", "bag"]))
            redemptions.append(op["ref"])
        elif kind == "cancel":
            op["redemption"] = draw(st.sampled_from(redemptions))
        elif kind in ("expire", "review"):
            op["as_of"] = moment.date()
        elif kind == "load_v2":
            v2_loaded = True
        ops.append(op)
    return {"v1": v1, "v2": v2, "ops": ops}


def _apply(engine: Any, folder: Path, op: dict[str, Any], source: dict[str, str]) -> Any:
    at = parse_when(op["at"], TZ)
    now = at + timedelta(minutes=1)  # recorded just after it happened, as at a till
    kind = op["op"]
    try:
        with session_scope(engine) as session:
            if kind == "load_v2":
                path = folder / "v2.toml"
                path.write_text(source["v2"], encoding="utf-8")
                return load_program(session, path, now=at)
            ctx = load_context(session, KEY)
            if kind == "enroll":
                importer = MemberImporter(ctx, now=now, keeps_locks=False, lock=False)
                row = MemberRow(None, op["member"], {}, at, op["opening"], op.get("expires"))
                importer.prepare(session, [row])
                importer.kernel.enrol_or_repeat(row)
                importer.finish()
            elif kind == "purchase":
                lines = [Line(c or None, parse_amount(a, 2)) for c, a in op["lines"]]
                post_purchase(
                    session, ctx, op["member"], ref=op["ref"], lines=lines, at=at, now=now
                )
            elif kind == "return":
                post_return(
                    session, ctx, op["member"], ref=op["ref"], original_ref=op["original"],
                    amount=parse_amount(op["amount"], 2), at=at, now=now,
                )  # fmt: skip
            elif kind == "adjust":
                post_adjustment(
                    session, ctx, op["member"], ref=op["ref"], points=op["points"],
                    reason="goodwill", at=at, now=now,
                )  # fmt: skip
            elif kind == "redeem":
                redeem(session, ctx, op["member"], op["reward"], ref=op["ref"], at=at, now=now)
            elif kind == "cancel":
                from sqlalchemy import text

                code = session.execute(
                    text(
                        "SELECT v.code FROM voucher v JOIN txn t ON t.id = v.txn_id "
                        "WHERE t.ref = :r"
                    ),
                    {"r": op["redemption"]},
                ).scalar()
                if code is not None:
                    cancel_voucher(session, ctx, code, at=at, now=now)
            elif kind == "expire":
                run_expire(session, ctx, as_of=op["as_of"], now=now)
            elif kind == "review":
                review_tiers(session, ctx, as_of=op["as_of"], now=now)
    except LoyaltyError:
        return None  # refused: nothing recorded, nothing to replay
    return None


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
def test_simulating_the_loaded_program_changes_nothing(
    history: dict[str, Any], backend: str, request: pytest.FixtureRequest, tmp_path_factory: Any
) -> None:
    folder = tmp_path_factory.mktemp("sim")
    with fresh_databases(backend, request, folder, 1) as (url,):
        engine = make_engine(url)
        try:
            path = folder / "v1.toml"
            path.write_text(history["v1"], encoding="utf-8")
            with session_scope(engine) as session:
                load_program(session, path, now=START.replace(tzinfo=TZ))
            latest, first = history["v1"], None
            for op in history["ops"]:
                _apply(engine, folder, op, history)
                if op["op"] == "load_v2":
                    latest, first = history["v2"], parse_when(op["at"], TZ)
            spec = parse_program(latest, "latest.toml")
            with session_scope(engine, write=False) as session:
                result = simulate(session, spec, first=first, last=date(2027, 5, 31), now=END)
        finally:
            engine.dispose()
    event(f"points expired: {result.actual.points_expired > 0}")
    event(f"members above the lowest tier: {sum(list(result.actual.tiers.values())[1:]) > 0}")
    event(f"redeemed: {result.actual.points_redeemed > 0}")
    detail = (result.actual, result.simulated, result.refused)
    assert all(not value or value == "0.00" for value in result.delta.values()), detail
    assert result.actual.tiers == result.simulated.tiers, detail
    assert result.members_changed == 0, detail
    assert result.redemptions_refused == 0 and result.refused == {}, detail
    assert result.actual == result.simulated
