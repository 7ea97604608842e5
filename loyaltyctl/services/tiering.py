"""Qualifying activity from the ledger, upgrades at posting time, and the tier history
every tier change is recorded in."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import func, insert
from sqlmodel import Session, col, select

from loyaltyctl.rules.money import from_minor
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.tiers import TierStep, level_index, qualified_level, tier_at, window_bounds
from loyaltyctl.rules.timeutil import local_midnight
from loyaltyctl.store.models import Member, TierChangeRow, Txn

REASONS = ("enrol", "upgrade", "review", "merge", "manual")


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


def upgrade_if_qualified(
    session: Session,
    program: Program,
    member: Member,
    day: date,
    *,
    now: datetime,
    txn_id: int | None = None,
) -> bool:
    """Move the member up as soon as the window ending on ``day`` reaches a higher
    threshold. Never down: downgrades wait for the tier review and its hold.

    The upgrade is dated ``day`` (a back-dated transaction upgrades from its own day),
    but never before the latest recorded change: a history must read in order, and a
    review that already moved the member after ``day`` stands until then."""
    assert member.id is not None
    activity = window_activity(session, program, member.id, day)
    target = qualified_level(program, activity)
    if level_index(program, target) > level_index(program, member.tier):
        latest = session.exec(
            select(func.max(TierChangeRow.effective_on)).where(TierChangeRow.member_id == member.id)
        ).one()
        effective = max(day, latest) if latest is not None else day
        member.tier = target
        member.tier_since = effective
        session.add(member)
        record_tier_change(session, member.id, target, effective, "upgrade", now=now, txn_id=txn_id)
        return True
    return False


def record_tier_change(
    session: Session,
    member_id: int,
    tier: str,
    effective_on: date,
    reason: str,
    *,
    now: datetime,
    txn_id: int | None = None,
    job_run_id: int | None = None,
) -> None:
    """Append one step to the member's tier history (the caller updates the cache on
    the member row in the same transaction)."""
    assert reason in REASONS, reason
    session.execute(
        insert(TierChangeRow).values(
            member_id=member_id,
            tier=tier,
            effective_on=effective_on,
            reason=reason,
            recorded_at=now,
            txn_id=txn_id,
            job_run_id=job_run_id,
        )
    )


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


def tier_held_on(session: Session, member: Member, day: date) -> str:
    """The tier the member held on ``day``: its current tier unless the history says
    it changed after that day."""
    assert member.id is not None
    step = tier_at(tier_history(session, member.id), day)
    return step.tier if step is not None else member.tier
