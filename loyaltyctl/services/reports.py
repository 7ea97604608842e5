"""The owner's summary: members, points and liability as of a date.

Every figure is taken from the ledger as it stood at the end of the as-of day (program
time zone): an entry counts once it is effective (``at``) before that instant, so a
report for a past date never changes when later activity arrives, and history migrated
in with past dates shows in the reports of those dates. Set-based SQL: a handful of
aggregate queries whatever the number of members.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlmodel import Session, col

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.money import format_amount
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.timeutil import as_utc, local_date, local_midnight
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.statements import entry_known, period_of, spec_at, txn_known
from loyaltyctl.store.models import Member, PointsEntry, TierChangeRow, Txn

ACTIVE_DAYS = 90


@dataclass
class PeriodFigures:
    """Movements dated in the period (as known at the as-of date)."""

    from_: date
    to: date
    new_members: int = 0
    points_issued: int = 0
    points_redeemed: int = 0
    points_refunded: int = 0
    points_expired: int = 0
    points_clawed_back: int = 0
    points_adjusted_in: int = 0
    points_adjusted_out: int = 0


@dataclass
class SummaryReport:
    program: str
    as_of: date
    members: int
    active_members: int
    points_issued: int
    points_redeemed: int
    points_expired: int
    points_outstanding: int
    liability: str
    redemption_rate: float
    breakage_rate: float
    tiers: dict[str, int]
    new_members: int
    points_clawed_back: int
    points_adjusted_in: int
    points_adjusted_out: int
    points_refunded: int
    points_debt: int
    currency: str
    point_value: str
    period: PeriodFigures
    # With ``by="store"``: the period's purchases and returns per store.
    stores: list[StoreFigures] | None = None


@dataclass
class StoreFigures:
    """One store's purchases and returns in the period (``store`` None: not given)."""

    store: str | None
    purchases: int
    sales: str
    returns: int
    returned: str
    points_earned: int
    points_clawed_back: int
    members: int


@dataclass
class _Flows:
    issued: int = 0
    redeemed: int = 0
    refunded: int = 0
    expired: int = 0
    clawed_back: int = 0
    adjusted_in: int = 0
    adjusted_out: int = 0


def report_days(
    *, as_of: date | None, first: date | None, last: date | None, today: date
) -> tuple[date, date, date]:
    """(as_of, first, last): the period defaults to the as-of day's month so far, the
    as-of date to the period's last day or today."""
    if (first is None) != (last is None):
        raise InvalidInput("give both --from and --to, or neither")
    if as_of is None:
        as_of = last if last is not None else today
    if first is None or last is None:
        return as_of, as_of.replace(day=1), as_of
    if first > last:
        raise InvalidInput(f"--from {first} is after --to {last}")
    if last > as_of:
        raise InvalidInput(
            f"the period ends ({last}) after --as-of {as_of}",
            hint="leave --as-of out (it defaults to --to) or move it on",
        )
    return as_of, first, last


def summary(
    session: Session,
    ctx: ProgramContext,
    *,
    as_of: date | None = None,
    first: date | None = None,
    last: date | None = None,
    now: datetime,
    by: str | None = None,
) -> SummaryReport:
    """``by="store"`` adds the period's figures per store."""
    if by not in (None, "store"):
        raise InvalidInput(f"--by {by!r}: reports break down by store only", hint="--by store")
    now = as_utc(now)
    today = local_date(now, ctx.spec.program.tz)
    as_of, first, last = report_days(as_of=as_of, first=first, last=last, today=today)
    # The version in force at the end of the as-of day decides the zone of that day.
    spec = spec_at(ctx, local_midnight(as_of + timedelta(days=1), ctx.spec.program.tz))
    tz = spec.program.tz
    moment = local_midnight(as_of + timedelta(days=1), tz)
    period = period_of(first, last, spec)

    known_members = _known_members(ctx.id, moment)
    members = _count(session, select(func.count()).select_from(known_members))
    new_members = _count(
        session,
        select(func.count())
        .select_from(known_members)
        .where(
            known_members.c.enrolled_at >= period.start,
            known_members.c.enrolled_at < period.end,
        ),
    )
    active = _count(
        session,
        select(func.count(func.distinct(Txn.member_id))).where(
            col(Txn.program_id) == ctx.id,
            col(Txn.kind) == "purchase",
            txn_known(moment),
            col(Txn.occurred_at) >= local_midnight(as_of - timedelta(days=ACTIVE_DAYS - 1), tz),
        ),
    )
    flows = _flows(session, ctx.id, entry_known(moment))
    in_period = _flows(
        session,
        ctx.id,
        and_(
            entry_known(moment),
            col(PointsEntry.at) >= period.start,
            col(PointsEntry.at) < period.end,
        ),
    )
    outstanding, debt = _balances(session, ctx.id, moment)
    if moment <= now:
        tiers = _tiers_from_history(session, known_members, as_of, spec.tier_keys(), members)
    else:
        tiers = _current_tiers(session, known_members, spec.tier_keys())
    return SummaryReport(
        program=ctx.key,
        as_of=as_of,
        members=members,
        active_members=active,
        points_issued=flows.issued,
        points_redeemed=flows.redeemed,
        points_expired=flows.expired,
        points_outstanding=outstanding,
        liability=liability_of(outstanding, spec),
        redemption_rate=_rate(flows.redeemed, flows.issued),
        breakage_rate=_rate(flows.expired, flows.issued),
        tiers=tiers,
        new_members=new_members,
        points_clawed_back=flows.clawed_back,
        points_adjusted_in=flows.adjusted_in,
        points_adjusted_out=flows.adjusted_out,
        points_refunded=flows.refunded,
        points_debt=debt,
        currency=spec.program.currency,
        point_value=format(spec.program.point_value, "f"),
        period=PeriodFigures(
            from_=first,
            to=last,
            new_members=new_members,
            points_issued=in_period.issued,
            points_redeemed=in_period.redeemed,
            points_refunded=in_period.refunded,
            points_expired=in_period.expired,
            points_clawed_back=in_period.clawed_back,
            points_adjusted_in=in_period.adjusted_in,
            points_adjusted_out=in_period.adjusted_out,
        ),
        stores=_by_store(session, ctx.id, period, moment, spec.program.minor_digits)
        if by == "store"
        else None,
    )


def _by_store(
    session: Session, program_id: int, period: Any, moment: datetime, digits: int
) -> list[StoreFigures]:
    """Purchases and returns dated in the period, per store; a return counts at the store
    it was made at."""
    purchase = col(Txn.kind) == "purchase"
    ret = col(Txn.kind) == "return"

    def total(condition: Any, value: Any) -> Any:
        return func.coalesce(func.sum(case((condition, value), else_=0)), 0)

    rows = session.execute(
        select(
            col(Txn.store),
            total(purchase, 1),
            total(purchase, col(Txn.amount_minor)),
            total(ret, 1),
            total(ret, col(Txn.amount_minor)),
            total(purchase, col(Txn.points)),
            total(ret, -col(Txn.points)),
            func.count(func.distinct(col(Txn.member_id))),
        )
        .where(
            col(Txn.program_id) == program_id,
            col(Txn.kind).in_(("purchase", "return")),
            txn_known(moment),
            col(Txn.occurred_at) >= period.start,
            col(Txn.occurred_at) < period.end,
        )
        .group_by(col(Txn.store))
    ).all()

    def money(minor: Any) -> str:
        return format_amount(Decimal(int(minor)).scaleb(-digits), digits)

    figures = [
        StoreFigures(
            store,
            int(bought),
            money(sales),
            int(back),
            money(returned),
            int(earned),
            int(clawed),
            int(members),
        )  # fmt: skip
        for store, bought, sales, back, returned, earned, clawed, members in rows
    ]
    # Named stores by name, then the transactions that named none.
    return sorted(figures, key=lambda f: (f.store is None, f.store or ""))


def liability_of(outstanding: int, spec: Program) -> str:
    """What the outstanding points cost the business, in the program's currency."""
    digits = spec.program.minor_digits
    value = (Decimal(outstanding) * spec.program.point_value).quantize(
        Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP
    )
    return format_amount(value, digits)


def rate(part: int, whole: int) -> float:
    return _rate(part, whole)


def _count(session: Session, stmt: Any) -> int:
    return int(session.connection().execute(stmt).scalar_one() or 0)


def _rate(part: int, whole: int) -> float:
    if whole <= 0:
        return 0.0
    return round(min(1.0, max(0.0, part / whole)), 6)


def _known_members(program_id: int, moment: datetime) -> Any:
    """Members enrolled before ``moment``."""
    return (
        select(col(Member.id).label("id"), col(Member.enrolled_at).label("enrolled_at"))
        .where(col(Member.program_id) == program_id, col(Member.enrolled_at) < moment)
        .subquery()
    )


def _flows(session: Session, program_id: int, condition: ColumnElement[bool]) -> _Flows:
    points = col(PointsEntry.points)
    stmt = (
        select(
            col(PointsEntry.kind),
            func.sum(case((points > 0, points), else_=0)),
            func.sum(case((points < 0, -points), else_=0)),
        )
        .join(Member, col(Member.id) == col(PointsEntry.member_id))
        .where(col(Member.program_id) == program_id, condition)
        .group_by(col(PointsEntry.kind))
    )
    sums = {
        kind: (int(plus or 0), int(minus or 0))
        for kind, plus, minus in session.connection().execute(stmt)
    }
    return flows_of(sums)


def flows_of(sums: dict[str, tuple[int, int]]) -> _Flows:
    """The summary's flows from the entries' sums per kind (points in, points out): the
    one definition of issued, redeemed and expired, for the ledger and for a simulated one."""

    def net(kind: str) -> int:
        plus, minus = sums.get(kind, (0, 0))
        return plus - minus

    refunded = net("refund")
    return _Flows(
        issued=net("earn") + net("bonus"),
        # Net of cancelled vouchers: their points came back and were not really spent.
        redeemed=-net("redeem") - refunded,
        refunded=refunded,
        expired=-net("expire"),
        clawed_back=-net("clawback"),
        adjusted_in=sums.get("adjust", (0, 0))[0],
        adjusted_out=sums.get("adjust", (0, 0))[1],
    )


def _balances(session: Session, program_id: int, moment: datetime) -> tuple[int, int]:
    """Points held by members with a positive balance, and owed by those below zero."""
    per_member = (
        select(func.sum(PointsEntry.points).label("balance"))
        .join(Member, col(Member.id) == col(PointsEntry.member_id))
        .where(col(Member.program_id) == program_id, entry_known(moment))
        .group_by(col(PointsEntry.member_id))
        .subquery()
    )
    balance = per_member.c.balance
    row = (
        session.connection()
        .execute(
            select(
                func.sum(case((balance > 0, balance), else_=0)),
                func.sum(case((balance < 0, -balance), else_=0)),
            )
        )
        .one()
    )
    return int(row[0] or 0), int(row[1] or 0)


def _tiers_from_history(
    session: Session, known_members: Any, as_of: date, keys: list[str], members: int
) -> dict[str, int]:
    """Members per tier on a past day: each known member's last tier history step dated
    on or before it (reviews included, the same rule as statements); the rest are at the
    lowest."""
    step = TierChangeRow
    ranked = (
        select(
            col(step.tier).label("tier"),
            func.row_number()
            .over(
                partition_by=col(step.member_id),
                order_by=(col(step.effective_on).desc(), col(step.id).desc()),
            )
            .label("rank"),
        )
        .join(known_members, known_members.c.id == col(step.member_id))
        .where(col(step.effective_on) <= as_of)
        .subquery()
    )
    rows = session.connection().execute(
        select(ranked.c.tier, func.count()).where(ranked.c.rank == 1).group_by(ranked.c.tier)
    )
    counts = dict.fromkeys(keys, 0)
    seen = 0
    for tier, count in rows:
        counts[tier] = counts.get(tier, 0) + int(count)
        seen += int(count)
    if keys:
        counts[keys[0]] += max(0, members - seen)
    return counts


def _current_tiers(session: Session, known_members: Any, keys: list[str]) -> dict[str, int]:
    rows = session.connection().execute(
        select(col(Member.tier), func.count())
        .join(known_members, known_members.c.id == col(Member.id))
        .group_by(col(Member.tier))
    )
    counts = dict.fromkeys(keys, 0)
    for tier, count in rows:
        counts[tier] = counts.get(tier, 0) + int(count)
    return counts


__all__ = [
    "PeriodFigures",
    "SummaryReport",
    "flows_of",
    "liability_of",
    "rate",
    "report_days",
    "summary",
]
