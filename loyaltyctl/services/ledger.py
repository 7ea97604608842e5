"""Reading a member and its lots with the ORM, for the services that look rather than
post (every point that moves is decided by the posting core, ``loyaltyctl.ledger``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from loyaltyctl.errors import NotFound
from loyaltyctl.rules.limits import check_member
from loyaltyctl.store.models import Member, PointsLot


def find_member(session: Session, program_id: int, code: str, *, lock: bool = False) -> Member:
    """The member row; with ``lock`` it is held (FOR UPDATE on PostgreSQL) until commit,
    so two writers for one member take turns before reading its lots."""
    code = check_member(code)
    stmt = select(Member).where(Member.program_id == program_id, Member.code == code)
    if lock:
        stmt = stmt.with_for_update()
    member = session.exec(stmt).first()
    if member is None:
        raise member_not_found(code, program_id, session)
    return member


def member_not_found(code: str, program_id: int, session: Session) -> NotFound:
    from loyaltyctl.store.models import ProgramRow

    program = session.get(ProgramRow, program_id)
    key = program.key if program else str(program_id)
    return NotFound(
        f"member {code} not found in program {key}",
        hint=f"enroll it with: loyaltyctl member enroll {code}",
    )


def open_lots(
    session: Session, member: Member, *, spendable_at: datetime | None = None
) -> list[PointsLot]:
    """Lots with points left, oldest-expiring first (no expiry last), then oldest earned.
    With ``spendable_at``, only lots no longer pending then."""
    stmt = select(PointsLot).where(PointsLot.member_id == member.id, PointsLot.remaining > 0)
    if spendable_at is not None:
        stmt = stmt.where(PointsLot.available_at <= spendable_at)
    stmt = stmt.order_by(
        case((col(PointsLot.expires_on).is_(None), 1), else_=0),
        col(PointsLot.expires_on),
        col(PointsLot.earned_at),
        col(PointsLot.id),
    )
    return list(session.exec(stmt).all())


def pending_points(session: Session, member_id: int, now: datetime) -> int:
    value = session.exec(
        select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
            PointsLot.member_id == member_id,
            PointsLot.available_at > now,
        )
    ).one()
    return int(value)
