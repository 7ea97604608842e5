"""Qualifying activity from the ledger and upgrades at posting time."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import func
from sqlmodel import Session, col, select

from loyaltyctl.rules.money import from_minor
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.tiers import level_index, qualified_level, window_bounds
from loyaltyctl.rules.timeutil import local_midnight
from loyaltyctl.store.models import Member, Txn


def activity_between(
    session: Session, program: Program, member_id: int, start: date, end: date
) -> Decimal:
    """Qualifying activity dated in [start, end) (program-local dates), in the tier
    metric's unit: points, currency units or visits."""
    tz = program.program.tz
    column = {
        "points": Txn.qual_points,
        "spend": Txn.qual_spend_minor,
        "visits": Txn.qual_visits,
    }[program.tiers.metric]
    total = session.exec(
        select(func.coalesce(func.sum(column), 0)).where(
            Txn.member_id == member_id,
            col(Txn.qual_at) >= local_midnight(start, tz),
            col(Txn.qual_at) < local_midnight(end, tz),
        )
    ).one()
    if program.tiers.metric == "spend":
        return from_minor(int(total), program.program.minor_digits)
    return Decimal(int(total))


def window_activity(session: Session, program: Program, member_id: int, as_of: date) -> Decimal:
    start, end = window_bounds(program.tiers, as_of)
    return activity_between(session, program, member_id, start, end)


def upgrade_if_qualified(session: Session, program: Program, member: Member, day: date) -> bool:
    """Move the member up as soon as the window ending on ``day`` reaches a higher
    threshold. Never down: downgrades wait for the tier review and its hold."""
    assert member.id is not None
    activity = window_activity(session, program, member.id, day)
    target = qualified_level(program, activity)
    if level_index(program, target) > level_index(program, member.tier):
        member.tier = target
        member.tier_since = day
        session.add(member)
        return True
    return False
