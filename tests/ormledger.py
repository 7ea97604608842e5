"""Ledger rows written one ORM object at a time, for tests that build odd ledger states
by hand (a redemption of a reward the program does not have, an expiry of chosen lots).
The tool itself writes through the posting core (``loyaltyctl.ledger``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import case
from sqlmodel import Session, col, select

from loyaltyctl.errors import NotAllowed
from loyaltyctl.ledger.postings import plan_debit, split_credit
from loyaltyctl.store.models import Member, PointsEntry, PointsLot


@dataclass(frozen=True)
class Source:
    """What an entry belongs to: a transaction or a job run."""

    version_id: int
    txn_id: int | None = None
    job_run_id: int | None = None


def _entry(
    session: Session,
    member: Member,
    source: Source,
    kind: str,
    points: int,
    at: datetime,
    now: datetime,
    lot: PointsLot | None,
) -> None:
    assert member.id is not None
    session.add(
        PointsEntry(
            member_id=member.id,
            txn_id=source.txn_id,
            job_run_id=source.job_run_id,
            lot_id=lot.id if lot else None,
            kind=kind,
            points=points,
            at=at,
            recorded_at=now,
            program_version_id=source.version_id,
        )
    )
    member.balance += points
    if lot is None:
        member.debt -= points
    else:
        lot.remaining += points
        session.add(lot)
    session.add(member)


def credit(
    session: Session,
    member: Member,
    source: Source,
    *,
    kind: str,
    lot_kind: str,
    points: int,
    at: datetime,
    now: datetime,
    available_at: datetime,
    expires_on: date | None,
) -> PointsLot | None:
    """New points: a debt is settled first, the rest becomes a lot."""
    assert points > 0 and source.txn_id is not None
    settle, rest = split_credit(member.debt, points)
    if settle:
        _entry(session, member, source, kind, settle, at, now, None)
    if not rest:
        return None
    assert member.id is not None
    lot = PointsLot(
        member_id=member.id,
        txn_id=source.txn_id,
        kind=lot_kind,
        earned_at=at,
        available_at=available_at,
        expires_on=expires_on,
        points=rest,
        remaining=0,
    )
    session.add(lot)
    session.flush()
    _entry(session, member, source, kind, rest, at, now, lot)
    return lot


@dataclass
class Taken:
    lot: PointsLot | None
    points: int


def debit(
    session: Session,
    member: Member,
    source: Source,
    *,
    kind: str,
    points: int,
    at: datetime,
    now: datetime,
    lots: Iterable[PointsLot],
    allow_debt: bool,
    refusal: str = "",
) -> list[Taken]:
    """Take ``points`` from ``lots`` in the order given; what they cannot cover becomes a
    debt when ``allow_debt``, otherwise nothing is taken and NotAllowed is raised."""
    assert points > 0
    chosen, needed = plan_debit(lots, points)
    plan = [Taken(lot, take) for lot, take in chosen]
    if needed and not allow_debt:
        raise NotAllowed(
            refusal or f"insufficient points: {points} needed, {points - needed} available",
            hint="the program forbids negative balances (earn.allow_negative = false)",
        )
    if needed:
        plan.append(Taken(None, needed))
    for step in plan:
        _entry(session, member, source, kind, -step.points, at, now, step.lot)
    return plan


def refund(
    session: Session,
    member: Member,
    source: Source,
    *,
    kind: str,
    taken: Sequence[tuple[PointsLot, int]],
    at: datetime,
    now: datetime,
) -> None:
    """Put points back into the lots they came from, so they keep their expiry dates."""
    for lot, points in taken:
        _entry(session, member, source, kind, points, at, now, lot)


def expire_lot(
    session: Session, member: Member, source: Source, lot: PointsLot, at: datetime, now: datetime
) -> int:
    points = lot.remaining
    if points > 0:
        _entry(session, member, source, "expire", -points, at, now, lot)
    return points


def open_lots(session: Session, member: Member) -> list[PointsLot]:
    """The member's lots with points left, in the order debits take them."""
    stmt = (
        select(PointsLot)
        .where(PointsLot.member_id == member.id, PointsLot.remaining > 0)
        .order_by(
            case((col(PointsLot.expires_on).is_(None), 1), else_=0),
            col(PointsLot.expires_on),
            col(PointsLot.earned_at),
            col(PointsLot.id),
        )
    )
    return list(session.exec(stmt).all())
