"""``report rewards``, ``report members``, ``report tiers --at-risk`` and the data of
``report dashboard``: grouped queries over vouchers, transactions and members, one row
per reward, per top member or per member at risk reaching Python."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from dateutil.relativedelta import relativedelta
from sqlalchemy import and_, case, func, or_, select
from sqlmodel import Session, col

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.money import format_amount, from_minor
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.tiers import hold_ends, level_index, qualified_level, window_bounds
from loyaltyctl.rules.timeutil import as_utc, local_date, local_midnight
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.economics import LiabilityReport, liability
from loyaltyctl.services.reports import SummaryReport, summary
from loyaltyctl.services.statements import spec_at
from loyaltyctl.store.models import Member, PointsEntry, Txn, Voucher

RANKINGS = ("spend", "points", "visits")


@dataclass
class RewardRow:
    reward: str
    name: str
    issued: int
    used: int
    cancelled: int
    expired: int
    live: int
    points: int
    cost: str


@dataclass
class MemberRow:
    member: str
    spend: str
    points: int
    visits: int
    balance: int
    tier: str
    last_purchase_at: datetime | None


@dataclass
class AtRisk:
    member: str
    tier: str
    hold_until: date | None
    qualifying: str
    needed: str
    would_drop_to: str


def _period(
    ctx: ProgramContext, first: date | None, last: date | None, now: datetime
) -> tuple[Program, datetime | None, datetime]:
    """The spec in force at the end of ``last`` (default today) and the period's UTC
    bounds; no ``first`` means since the beginning."""
    today = local_date(as_utc(now), ctx.spec.program.tz)
    last = last or today
    if first is not None and first > last:
        raise InvalidInput(f"--from {first} is after --to {last}")
    spec = spec_at(ctx, local_midnight(last + timedelta(days=1), ctx.spec.program.tz))
    tz = spec.program.tz
    start = local_midnight(first, tz) if first is not None else None
    return spec, start, local_midnight(last + timedelta(days=1), tz)


# ---- rewards -------------------------------------------------------------------------------


def reward_report(
    session: Session,
    ctx: ProgramContext,
    *,
    first: date | None = None,
    last: date | None = None,
    now: datetime,
) -> list[RewardRow]:
    """Vouchers issued in the period by reward, and what had become of them by the end
    of it: used, cancelled, expired (past their date, marked by the nightly job or not)
    or still live; ``points`` spent on the used ones and their cost at the point value."""
    spec, start, end = _period(ctx, first, last, now)
    v = Voucher
    used = and_(col(v.used_at).is_not(None), col(v.used_at) < end)
    cancelled = and_(col(v.cancelled_at).is_not(None), col(v.cancelled_at) < end)
    expired = and_(~used, ~cancelled, col(v.expires_at) <= end)
    conditions = [col(v.program_id) == ctx.id, col(v.issued_at) < end]
    if start is not None:
        conditions.append(col(v.issued_at) >= start)
    rows = session.connection().execute(
        select(
            col(v.reward_key),
            func.max(v.reward_name),
            func.count(),
            func.sum(case((used, 1), else_=0)),
            func.sum(case((cancelled, 1), else_=0)),
            func.sum(case((expired, 1), else_=0)),
            func.sum(case((used, v.points), else_=0)),
        )
        .where(*conditions)
        .group_by(col(v.reward_key))
    )
    found = {row[0]: row for row in rows}
    order = [r.key for r in spec.rewards] + sorted(set(found) - {r.key for r in spec.rewards})
    digits = spec.program.minor_digits
    report = []
    for key in order:
        row = found.get(key)
        name = next((r.name for r in spec.rewards if r.key == key), key)
        issued, n_used, n_cancelled, n_expired, points = (
            (int(x or 0) for x in row[2:]) if row else (0, 0, 0, 0, 0)
        )
        cost = (Decimal(points) * spec.program.point_value).quantize(Decimal(1).scaleb(-digits))
        report.append(
            RewardRow(
                reward=key,
                name=row[1] if row else name,
                issued=issued,
                used=n_used,
                cancelled=n_cancelled,
                expired=n_expired,
                live=issued - n_used - n_cancelled - n_expired,
                points=points,
                cost=format_amount(cost, digits),
            )
        )
    return report


# ---- members -------------------------------------------------------------------------------


def top_members(
    session: Session,
    ctx: ProgramContext,
    *,
    top: int = 10,
    by: str = "spend",
    first: date | None = None,
    last: date | None = None,
    now: datetime,
) -> list[MemberRow]:
    """The best ``top`` members of the period by net spend, net points earned on
    purchases or visits; ties by member code. Codes only: erased members show as
    themselves without personal data."""
    if by not in RANKINGS:
        raise InvalidInput(f"--by {by!r} is not one of: {', '.join(RANKINGS)}")
    if top < 1:
        raise InvalidInput(f"--top {top} must be at least 1")
    spec, start, end = _period(ctx, first, last, now)
    t = Txn
    purchase, returned = col(t.kind) == "purchase", col(t.kind) == "return"
    spend = func.sum(
        case((purchase, col(t.amount_minor)), (returned, -col(t.amount_minor)), else_=0)
    ).label("spend")
    points = func.sum(t.points).label("points")
    visits = func.sum(case((purchase, 1), else_=0)).label("visits")
    last_at = func.max(case((purchase, t.occurred_at), else_=None)).label("last_at")
    conditions = [col(t.program_id) == ctx.id, or_(purchase, returned), col(t.occurred_at) < end]
    if start is not None:
        conditions.append(col(t.occurred_at) >= start)
    key = {"spend": spend, "points": points, "visits": visits}[by]
    ranked = (
        select(col(t.member_id), spend, points, visits, last_at)
        .where(*conditions)
        .group_by(col(t.member_id))
        .subquery()
    )
    order = getattr(ranked.c, key.name)
    rows = (
        session.connection()
        .execute(
            select(ranked, col(Member.code), col(Member.tier))
            .join(Member, col(Member.id) == ranked.c.member_id)
            .order_by(order.desc(), col(Member.code))
            .limit(top)
        )
        .all()
    )
    ids = [row.member_id for row in rows]
    balances: dict[int, int] = dict(
        session.connection()
        .execute(
            select(col(PointsEntry.member_id), func.sum(PointsEntry.points))
            .where(col(PointsEntry.member_id).in_(ids), col(PointsEntry.at) < end)
            .group_by(col(PointsEntry.member_id))
        )
        .all()
    )
    digits = spec.program.minor_digits
    return [
        MemberRow(
            member=row.code,
            spend=format_amount(from_minor(int(row.spend or 0), digits), digits),
            points=int(row.points or 0),
            visits=int(row.visits or 0),
            balance=int(balances.get(row.member_id) or 0),
            tier=row.tier,
            last_purchase_at=as_utc(row.last_at) if row.last_at is not None else None,
        )
        for row in rows
    ]


# ---- tiers at risk -------------------------------------------------------------------------


def tiers_at_risk(
    session: Session,
    ctx: ProgramContext,
    *,
    within: int = 30,
    as_of: date | None = None,
    now: datetime,
) -> list[AtRisk]:
    """Members above the lowest tier whose hold ends within ``within`` days of
    ``as_of`` (or has ended, awaiting the review) and whose qualifying activity in the
    window ending on ``as_of`` is below their tier's minimum: who the next review would
    move down, and to which tier."""
    if within < 0:
        raise InvalidInput(f"--within {within}d must not be negative")
    as_of = as_of or local_date(as_utc(now), ctx.spec.program.tz)
    spec = spec_at(ctx, local_midnight(as_of + timedelta(days=1), ctx.spec.program.tz))
    return list(_at_risk(session, ctx.id, spec, as_of, as_of + timedelta(days=within)))


def _at_risk(
    session: Session, program_id: int, spec: Program, as_of: date, limit: date
) -> Iterator[AtRisk]:
    keys = spec.tier_keys()
    if len(keys) < 2:
        return
    tz = spec.program.tz
    first, end = window_bounds(spec.tiers, as_of)
    metric = {
        "points": Txn.qual_points,
        "spend": Txn.qual_spend_minor,
        "visits": Txn.qual_visits,
    }[spec.tiers.metric]
    # A loose bound in SQL (month ends shift hold dates by a few days); exact below.
    latest_since = limit - relativedelta(months=spec.tiers.hold_months) + timedelta(days=4)
    window = and_(
        col(Txn.member_id) == col(Member.id),
        col(Txn.qual_at) >= local_midnight(first, tz),
        col(Txn.qual_at) < local_midnight(end, tz),
    )
    rows = session.connection().execute(
        select(col(Member.code), col(Member.tier), col(Member.tier_since), func.sum(metric))
        .select_from(Member)
        .outerjoin(Txn, window)
        .where(
            col(Member.program_id) == program_id,
            col(Member.tier) != keys[0],
            col(Member.status).not_in(("closed", "merged")),
            or_(col(Member.tier_since).is_(None), col(Member.tier_since) <= latest_since),
        )
        .group_by(col(Member.id), col(Member.code), col(Member.tier), col(Member.tier_since))
        .order_by(col(Member.code))
    )
    levels = {level.key: level for level in spec.tiers.levels}
    for code, tier, since, raw in rows:
        hold_until = hold_ends(spec.tiers, since) if since is not None else None
        if hold_until is not None and hold_until > limit:
            continue
        activity = _activity(spec, raw)
        level = levels.get(tier)
        if level is None or activity >= level.min:
            continue
        yield AtRisk(
            member=code,
            tier=tier,
            hold_until=hold_until,
            qualifying=_shown(spec, activity),
            needed=_shown(spec, level.min - activity),
            would_drop_to=_drop_to(spec, tier, activity),
        )


def _activity(spec: Program, raw: Any) -> Decimal:
    value = int(raw or 0)
    if spec.tiers.metric == "spend":
        return from_minor(value, spec.program.minor_digits)
    return Decimal(value)


def _shown(spec: Program, value: Decimal) -> str:
    if spec.tiers.metric == "spend":
        return format_amount(value, spec.program.minor_digits)
    return str(int(value))


def _drop_to(spec: Program, tier: str, activity: Decimal) -> str:
    keys = spec.tier_keys()
    qualified = qualified_level(spec, activity)
    if spec.tiers.downgrade == "to-qualified":
        return qualified
    return keys[max(level_index(spec, tier) - 1, level_index(spec, qualified), 0)]


# ---- dashboard -----------------------------------------------------------------------------


@dataclass
class Dashboard:
    program: str
    name: str
    as_of: date
    summary: SummaryReport
    liability: LiabilityReport
    rewards: list[RewardRow]
    at_risk: list[AtRisk]


def dashboard(
    session: Session, ctx: ProgramContext, *, as_of: date | None = None, now: datetime
) -> Dashboard:
    """The figures of the one-page dashboard: the summary as of the day, the liability
    over the twelve months ending then (by month), the rewards of those months and the
    members whose tier is at risk in the next 30 days."""
    as_of = as_of or local_date(as_utc(now), ctx.spec.program.tz)
    first = as_of.replace(day=1) - relativedelta(months=11)
    spec = spec_at(ctx, local_midnight(as_of + timedelta(days=1), ctx.spec.program.tz))
    return Dashboard(
        program=ctx.key,
        name=spec.program.name,
        as_of=as_of,
        summary=summary(session, ctx, as_of=as_of, now=now),
        liability=liability(session, ctx, first=first, last=as_of, now=now),
        rewards=reward_report(session, ctx, first=first, last=as_of, now=now),
        at_risk=tiers_at_risk(session, ctx, within=30, as_of=as_of, now=now),
    )


__all__ = [
    "RANKINGS",
    "AtRisk",
    "Dashboard",
    "MemberRow",
    "RewardRow",
    "dashboard",
    "reward_report",
    "tiers_at_risk",
    "top_members",
]
