"""Reading a member and its points with the ORM, for the services that look rather than
post (every point that moves is decided by the posting core, ``loyaltyctl.ledger``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, func
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


def spendable_points(session: Session, member_id: int, at: datetime) -> int:
    """Points in the member's lots that may be spent at ``at``."""
    return _points_left(session, member_id, col(PointsLot.available_at) <= at)


def pending_points(session: Session, member_id: int, now: datetime) -> int:
    """Points in the member's lots still pending at ``now``."""
    return _points_left(session, member_id, col(PointsLot.available_at) > now)


def _points_left(session: Session, member_id: int, available: ColumnElement[bool]) -> int:
    value = session.exec(
        select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
            PointsLot.member_id == member_id, PointsLot.remaining > 0, available
        )
    ).one()
    return int(value)
