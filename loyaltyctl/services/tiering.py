"""Qualifying activity from the ledger, and the tier history every tier change is recorded
in (upgrades at posting time are the posting core's, ``ledger.kernel``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import Decimal

from sqlalchemy import func
from sqlmodel import Session, col, select

from loyaltyctl.rules.money import from_minor
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.tiers import TierStep, window_bounds
from loyaltyctl.rules.timeutil import local_midnight
from loyaltyctl.store.models import TierChangeRow, Txn


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


def tier_histories(session: Session, member_ids: Sequence[int]) -> dict[int, list[TierStep]]:
    """Each member's tier history, oldest first; one query for all of them."""
    found: dict[int, list[TierStep]] = {member_id: [] for member_id in member_ids}
    if not member_ids:
        return found
    rows = session.connection().execute(
        select(
            col(TierChangeRow.member_id),
            col(TierChangeRow.tier),
            col(TierChangeRow.effective_on),
            col(TierChangeRow.reason),
        )
        .where(col(TierChangeRow.member_id).in_(member_ids))
        .order_by(
            col(TierChangeRow.member_id), col(TierChangeRow.effective_on), col(TierChangeRow.id)
        )
    )
    for member_id, tier, effective_on, reason in rows:
        found[member_id].append(TierStep(tier, effective_on, reason))
    return found


def tier_history(session: Session, member_id: int) -> list[TierStep]:
    return tier_histories(session, [member_id])[member_id]
