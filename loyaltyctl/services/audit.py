"""``audit list``: who changed what, oldest first (the rows ``store.audit`` writes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from loyaltyctl.rules.versions import ProgramContext
from loyaltyctl.services.ledger import find_member
from loyaltyctl.store.models import AuditRow, Member


@dataclass
class AuditLine:
    at: datetime
    actor: str
    command: str
    member: str | None
    ref: str | None
    summary: str


def list_audit(
    session: Session,
    ctx: ProgramContext | None,
    *,
    member: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[AuditLine]:
    stmt = select(AuditRow, Member.code).join(
        Member, col(Member.id) == col(AuditRow.member_id), isouter=True
    )
    if member is not None:
        assert ctx is not None
        found = find_member(session, ctx.id, member)
        stmt = stmt.where(AuditRow.member_id == found.id)
    if since is not None:
        stmt = stmt.where(AuditRow.at >= since)
    stmt = stmt.order_by(col(AuditRow.at), col(AuditRow.id))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        AuditLine(row.at, row.actor, row.command, code, row.ref, row.summary)
        for row, code in session.exec(stmt).all()
    ]
