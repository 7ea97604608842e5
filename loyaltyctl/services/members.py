"""Enrolment, member details and status."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from loyaltyctl.errors import InvalidInput, NotAllowed
from loyaltyctl.ledger.requests import Enroll
from loyaltyctl.rules.expiry import inactivity_due
from loyaltyctl.rules.search import email_key, phone_rev
from loyaltyctl.rules.tiers import hold_ends
from loyaltyctl.rules.timeutil import local_date
from loyaltyctl.services import events
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.ledger import find_member, pending_points
from loyaltyctl.services.posting import EnrollResult, enroll_request
from loyaltyctl.services.tiering import tier_history, window_activity
from loyaltyctl.store.audit import scrub_member
from loyaltyctl.store.models import Member, PointsEntry, PointsLot, Txn

PERSONAL_FIELDS = ("name", "email", "phone", "birthday")
# Every free-text field of a member, cleared by erasure: the reason given for a
# suspension or closure may name the person too.
ERASED_FIELDS = (*PERSONAL_FIELDS, "status_reason")
STATUSES = ("active", "suspended", "closed", "merged")


def enroll(
    session: Session,
    ctx: ProgramContext,
    code: str,
    *,
    name: str | None = None,
    email: str | None = None,
    phone: str | None = None,
    birthday: date | None = None,
    at: datetime | None = None,
    now: datetime,
) -> EnrollResult:
    """Enroll a member with the signup bonus; an identical repeat is a no-op."""
    request = Enroll(
        member=code, name=name, email=email, phone=phone, birthday=birthday, at=at, now=now
    )
    return enroll_request(session, ctx, request, now)


@dataclass
class Expiring:
    date: date
    points: int


@dataclass
class MemberView:
    member: str
    program: str
    status: str
    tier: str
    balance: int
    pending: int
    available: int
    lifetime_earned: int
    qualifying: Any
    expiring: list[Expiring]
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    birthday: date | None = None
    enrolled_at: datetime | None = None
    tier_since: date | None = None
    hold_until: date | None = None
    debt: int = 0
    erased: bool = False
    status_reason: str | None = None
    recent: list[dict[str, Any]] = field(default_factory=list)
    # Oldest first: {tier, from, reason}.
    tier_history: list[dict[str, Any]] = field(default_factory=list)


def show_member(
    session: Session, ctx: ProgramContext, code: str, *, now: datetime, recent: int = 5
) -> MemberView:
    member = find_member(session, ctx.id, code)
    assert member.id is not None
    spec = ctx.spec
    tz = spec.program.tz
    today = local_date(now, tz)
    pending = pending_points(session, member.id, now)
    lifetime = session.exec(
        select(func.coalesce(func.sum(PointsEntry.points), 0)).where(
            PointsEntry.member_id == member.id,
            col(PointsEntry.kind).in_(("earn", "bonus")),
        )
    ).one()
    activity = window_activity(session, spec, member.id, today)
    qualifying: Any = str(activity) if spec.tiers.metric == "spend" else int(activity)
    txns = session.exec(
        select(Txn)
        .where(Txn.member_id == member.id)
        .order_by(col(Txn.occurred_at).desc(), col(Txn.id).desc())
        .limit(recent)
    ).all()
    return MemberView(
        member=member.code,
        program=ctx.key,
        status=member.status,
        tier=member.tier,
        balance=member.balance,
        pending=pending,
        available=member.balance - pending,
        lifetime_earned=int(lifetime),
        qualifying=qualifying,
        expiring=expiring_soon(session, ctx, member),
        name=member.name,
        email=member.email,
        phone=member.phone,
        birthday=member.birthday,
        enrolled_at=member.enrolled_at,
        tier_since=member.tier_since,
        hold_until=hold_ends(spec.tiers, member.tier_since) if member.tier_since else None,
        debt=member.debt,
        erased=member.erased_at is not None,
        status_reason=member.status_reason,
        recent=[
            {"at": t.occurred_at, "ref": t.ref, "kind": t.kind, "points": t.points} for t in txns
        ],
        tier_history=[
            {"tier": step.tier, "from": step.from_, "reason": step.reason}
            for step in tier_history(session, member.id)
        ],
    )


def expiring_soon(
    session: Session, ctx: ProgramContext, member: Member, *, limit: int = 5
) -> list[Expiring]:
    """The next expiry dates with the points due on each."""
    spec = ctx.spec
    if spec.expiry.policy == "inactivity":
        if member.balance <= 0:
            return []
        last = member.last_purchase_at or member.enrolled_at
        due = inactivity_due(spec.expiry, local_date(last, spec.program.tz))
        return [Expiring(due, member.balance)] if due else []
    rows = session.exec(
        select(col(PointsLot.expires_on), func.sum(PointsLot.remaining))
        .where(
            PointsLot.member_id == member.id,
            PointsLot.remaining > 0,
            col(PointsLot.expires_on).is_not(None),
        )
        .group_by(col(PointsLot.expires_on))
        .order_by(col(PointsLot.expires_on))
        .limit(limit)
    ).all()
    return [Expiring(day, int(points)) for day, points in rows if day is not None]


@dataclass
class MemberRow:
    member: str
    status: str
    tier: str
    balance: int
    name: str | None
    enrolled_at: datetime


def list_members(
    session: Session,
    ctx: ProgramContext,
    *,
    tier: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[MemberRow]:
    if tier is not None and tier not in ctx.spec.tier_keys():
        raise InvalidInput(
            f"unknown tier {tier!r} in program {ctx.key}",
            hint="tiers: " + ", ".join(ctx.spec.tier_keys()),
        )
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r}", hint="use one of: " + ", ".join(STATUSES))
    stmt = select(Member).where(Member.program_id == ctx.id)
    if tier:
        stmt = stmt.where(Member.tier == tier)
    if status:
        stmt = stmt.where(Member.status == status)
    stmt = stmt.order_by(col(Member.code)).offset(offset).limit(limit)
    return [
        MemberRow(m.code, m.status, m.tier, m.balance, m.name, m.enrolled_at)
        for m in session.exec(stmt).all()
    ]


@dataclass
class StatusResult:
    member: str
    status: str
    changed: bool


_TRANSITIONS = {
    "suspend": ("suspended", {"active"}),
    "reactivate": ("active", {"suspended"}),
    "close": ("closed", {"active", "suspended"}),
}


def change_status(
    session: Session,
    ctx: ProgramContext,
    code: str,
    action: str,
    *,
    reason: str | None,
    now: datetime,
) -> StatusResult:
    """suspend / reactivate / close; repeating the same change is a no-op."""
    if action not in _TRANSITIONS:
        raise InvalidInput(
            f"unknown status change {action!r}", hint="use: " + ", ".join(_TRANSITIONS)
        )
    target, allowed_from = _TRANSITIONS[action]
    member = find_member(session, ctx.id, code, lock=True)
    if member.status == target:
        return StatusResult(member.code, member.status, False)
    if member.status not in allowed_from:
        raise NotAllowed(
            f"member {code} is {member.status} and cannot be {target}",
            hint="a closed membership is final" if member.status == "closed" else None,
        )
    previous = member.status
    member.status = target
    member.status_reason = reason
    member.updated_at = now
    session.add(member)
    events.status_changed(session, ctx.id, member.code, previous, target, now)
    return StatusResult(member.code, member.status, True)


def update_member(
    session: Session,
    ctx: ProgramContext,
    code: str,
    *,
    changes: dict[str, Any],
    now: datetime,
) -> MemberView:
    member = find_member(session, ctx.id, code, lock=True)
    if member.erased_at is not None:
        raise NotAllowed(
            f"member {code} was erased; personal data cannot be stored for it again",
            hint="enroll the person under a new member id",
        )
    for key, value in changes.items():
        if key in PERSONAL_FIELDS and value is not None:
            setattr(member, key, value)
    member.email_key = email_key(member.email)
    member.phone_rev = phone_rev(member.phone)
    member.updated_at = now
    session.add(member)
    session.flush()
    return show_member(session, ctx, code, now=now)


def erase_member(
    session: Session, ctx: ProgramContext, code: str, *, now: datetime
) -> StatusResult:
    """Remove personal data for good; the ledger and balance stay."""
    member = find_member(session, ctx.id, code, lock=True)
    changed = member.erased_at is None or any(getattr(member, k) for k in ERASED_FIELDS)
    for key in ERASED_FIELDS:
        setattr(member, key, None)
    member.email_key = member.phone_rev = None
    if member.erased_at is None:
        member.erased_at = now
    member.updated_at = now
    session.add(member)
    if changed:
        events.erased(session, ctx.id, member.code, now)
    assert member.id is not None
    scrub_member(session, member.id)
    return StatusResult(member.code, "erased", changed)
