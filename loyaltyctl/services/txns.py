"""Purchases, returns and adjustments: each idempotent on its reference."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from loyaltyctl.errors import Conflict, InvalidInput, NotFound
from loyaltyctl.rules.earning import Line, Totals, purchase_points, return_share
from loyaltyctl.rules.expiry import lot_expiry
from loyaltyctl.rules.money import from_minor, to_minor
from loyaltyctl.rules.timeutil import local_date
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.ledger import Source, credit, debit, find_member, open_lots
from loyaltyctl.services.members import require_active
from loyaltyctl.services.tiering import tier_held_on, upgrade_if_qualified
from loyaltyctl.store.models import Member, PointsLot, Txn


@dataclass
class TxnResult:
    ref: str
    member: str
    kind: str
    points: int
    balance: int
    tier: str
    duplicate: bool
    at: datetime


def new_ref(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _existing(
    session: Session, ctx: ProgramContext, ref: str, payload: dict[str, Any], at: datetime | None
) -> TxnResult | None:
    """The original result for an identical retry; Conflict for a different payload.

    ``at`` counts only when the retry states it: a retry without ``--at`` is still the
    same request even though "now" has moved on."""
    txn = session.exec(select(Txn).where(Txn.program_id == ctx.id, Txn.ref == ref)).first()
    if txn is None:
        return None
    stored = json.loads(txn.payload)
    same = {k: v for k, v in stored.items() if k != "at"} == payload
    if same and at is not None and txn.occurred_at != at:
        same = False
    if not same:
        raise Conflict(
            f"reference {ref} was already used for a different {txn.kind} in program {ctx.key}",
            hint="use a new --ref for a new transaction; an identical retry is safe",
        )
    member = session.get(Member, txn.member_id)
    assert member is not None
    return TxnResult(
        ref,
        member.code,
        txn.kind,
        txn.points,
        txn.balance_after,
        txn.tier_after,
        True,
        txn.occurred_at,
    )


def _check_after_enrolment(ctx: ProgramContext, member: Member, at: datetime, what: str) -> None:
    tz = ctx.spec.program.tz
    if local_date(at, tz) < local_date(member.enrolled_at, tz):
        raise InvalidInput(
            f"{what} dated {local_date(at, tz)} is before member {member.code} enrolled "
            f"({local_date(member.enrolled_at, tz)})",
            hint="check --at, or enroll the member with an earlier --at",
        )


def _finish(session: Session, txn: Txn, member: Member, duplicate: bool = False) -> TxnResult:
    txn.balance_after = member.balance
    txn.tier_after = member.tier
    session.add(txn)
    session.flush()
    return TxnResult(
        txn.ref,
        member.code,
        txn.kind,
        txn.points,
        member.balance,
        member.tier,
        duplicate,
        txn.occurred_at,
    )


def post_purchase(
    session: Session,
    ctx: ProgramContext,
    code: str,
    *,
    ref: str,
    lines: list[Line],
    at: datetime | None,
    now: datetime,
) -> TxnResult:
    if not lines:
        raise InvalidInput("a purchase needs --amount or at least one --line")
    digits = ctx.spec.program.minor_digits
    payload = {
        "kind": "purchase",
        "member": code,
        "lines": [[line.category, str(line.amount)] for line in lines],
    }
    member = find_member(session, ctx.id, code, lock=True)
    done = _existing(session, ctx, ref, payload, at)
    if done:
        return done
    require_active(member, "earn points")
    when = at or now
    _check_after_enrolment(ctx, member, when, "a purchase")
    version = ctx.version_at(when)
    spec = version.spec
    tz = spec.program.tz
    day = local_date(when, tz)
    # A back-dated purchase earns at the tier held on its day, not at today's.
    earning = purchase_points(spec, lines, tier_held_on(session, member, day), day)
    amount = sum((line.amount for line in lines), Decimal(0))
    assert member.id is not None
    txn = Txn(
        program_id=ctx.id,
        member_id=member.id,
        ref=ref,
        kind="purchase",
        occurred_at=when,
        recorded_at=now,
        amount_minor=to_minor(amount, digits),
        payload=_canonical({**payload, "at": when.isoformat()}),
        points=earning.points,
        qual_points=earning.points,
        qual_spend_minor=to_minor(earning.eligible_spend, digits),
        qual_visits=1,
        qual_at=when,
        program_version_id=version.id,
    )
    session.add(txn)
    session.flush()
    if earning.points > 0:
        credit(
            session,
            member,
            Source(version.id, txn_id=txn.id),
            kind="earn",
            lot_kind="earn",
            points=earning.points,
            at=when,
            now=now,
            available_at=when + timedelta(days=spec.earn.pending_days),
            expires_on=lot_expiry(spec.expiry, day),
        )
    if member.last_purchase_at is None or member.last_purchase_at < when:
        member.last_purchase_at = when
    # The purchase that crosses a threshold earned at the old tier (computed above).
    upgrade_if_qualified(session, spec, member, day, now=now, txn_id=txn.id)
    return _finish(session, txn, member)


def post_return(
    session: Session,
    ctx: ProgramContext,
    code: str,
    *,
    ref: str,
    original_ref: str,
    amount: Decimal,
    at: datetime | None,
    now: datetime,
) -> TxnResult:
    digits = ctx.spec.program.minor_digits
    payload = {"kind": "return", "member": code, "original": original_ref, "amount": str(amount)}
    member = find_member(session, ctx.id, code, lock=True)
    done = _existing(session, ctx, ref, payload, at)
    if done:
        return done
    if amount <= 0:
        raise InvalidInput(f"return amount {amount} must be greater than zero")
    original = session.exec(
        select(Txn).where(Txn.program_id == ctx.id, Txn.ref == original_ref)
    ).first()
    if original is None or original.kind != "purchase" or original.member_id != member.id:
        raise NotFound(
            f"purchase {original_ref} of member {code} not found in program {ctx.key}",
            hint=f"see the member's transactions with: loyaltyctl txn list {code}",
        )
    when = at or now
    if when < original.occurred_at:
        raise InvalidInput(
            f"the return is dated before purchase {original_ref} "
            f"({original.occurred_at.isoformat()})",
            hint="check --at",
        )
    previous = session.exec(
        select(
            func.coalesce(func.sum(Txn.amount_minor), 0),
            func.coalesce(func.sum(Txn.points), 0),
            func.coalesce(func.sum(Txn.qual_points), 0),
            func.coalesce(func.sum(Txn.qual_spend_minor), 0),
        ).where(Txn.original_id == original.id, Txn.kind == "return")
    ).one()
    assert original.amount_minor is not None
    share = return_share(
        Totals(
            original.amount_minor,
            original.points,
            original.qual_points,
            original.qual_spend_minor,
        ),
        Totals(*(int(v or 0) for v in previous)),
        amount,
        digits,
        ref=original_ref,
        hint="check --amount",
    )
    claw = share.clawback
    version = ctx.version_at(when)
    spec = version.spec
    assert member.id is not None
    txn = Txn(
        program_id=ctx.id,
        member_id=member.id,
        ref=ref,
        kind="return",
        occurred_at=when,
        recorded_at=now,
        amount_minor=share.amount_minor,
        payload=_canonical({**payload, "at": when.isoformat()}),
        points=share.points,
        original_id=original.id,
        qual_points=share.qual_points,
        qual_spend_minor=share.qual_spend_minor,
        qual_visits=share.qual_visits,
        qual_at=original.qual_at,
        program_version_id=version.id,
    )
    session.add(txn)
    session.flush()
    if claw > 0:
        own = session.exec(
            select(PointsLot).where(PointsLot.txn_id == original.id, PointsLot.remaining > 0)
        ).all()
        others = [lot for lot in open_lots(session, member) if lot.txn_id != original.id]
        debit(
            session,
            member,
            Source(version.id, txn_id=txn.id),
            kind="clawback",
            points=claw,
            at=when,
            now=now,
            lots=[*own, *others],
            allow_debt=spec.earn.allow_negative,
            refusal=(
                f"return would take {claw} points but member {code} has only "
                f"{member.balance}: the program forbids negative balances"
            ),
        )
    return _finish(session, txn, member)


def post_adjustment(
    session: Session,
    ctx: ProgramContext,
    code: str,
    *,
    ref: str,
    points: int,
    reason: str,
    at: datetime | None,
    now: datetime,
) -> TxnResult:
    if points == 0:
        raise InvalidInput("--points must not be 0", hint="give a positive or negative number")
    if not reason.strip():
        raise InvalidInput("--reason must not be empty", hint="say why, e.g. 'goodwill'")
    payload = {"kind": "adjust", "member": code, "points": points, "reason": reason}
    member = find_member(session, ctx.id, code, lock=True)
    done = _existing(session, ctx, ref, payload, at)
    if done:
        return done
    when = at or now
    _check_after_enrolment(ctx, member, when, "an adjustment")
    version = ctx.version_at(when)
    spec = version.spec
    assert member.id is not None
    qualifies = spec.earn.bonus_qualifies
    txn = Txn(
        program_id=ctx.id,
        member_id=member.id,
        ref=ref,
        kind="adjust",
        occurred_at=when,
        recorded_at=now,
        payload=_canonical({**payload, "at": when.isoformat()}),
        points=points,
        reason=reason,
        qual_points=points if qualifies else 0,
        qual_at=when,
        program_version_id=version.id,
    )
    session.add(txn)
    session.flush()
    source = Source(version.id, txn_id=txn.id)
    day = local_date(when, spec.program.tz)
    if points > 0:
        credit(
            session,
            member,
            source,
            kind="adjust",
            lot_kind="adjust",
            points=points,
            at=when,
            now=now,
            available_at=when,
            expires_on=lot_expiry(spec.expiry, day),
        )
        if qualifies:
            upgrade_if_qualified(session, spec, member, day, now=now, txn_id=txn.id)
    else:
        debit(
            session,
            member,
            source,
            kind="adjust",
            points=-points,
            at=when,
            now=now,
            lots=open_lots(session, member),
            allow_debt=spec.earn.allow_negative,
            refusal=(
                f"adjustment of {points} exceeds member {code}'s balance of {member.balance}: "
                "the program forbids negative balances"
            ),
        )
    return _finish(session, txn, member)


@dataclass
class TxnLine:
    at: datetime
    ref: str
    kind: str
    amount: str | None
    points: int
    balance: int
    original: str | None
    reason: str | None


def list_txns(
    session: Session, ctx: ProgramContext, code: str, *, limit: int | None = None
) -> list[TxnLine]:
    member = find_member(session, ctx.id, code)
    digits = ctx.spec.program.minor_digits
    originals: dict[int, str] = {}
    rows = session.exec(
        select(Txn).where(Txn.member_id == member.id).order_by(col(Txn.occurred_at), col(Txn.id))
    ).all()
    for txn in rows:
        assert txn.id is not None
        originals[txn.id] = txn.ref
    lines = [
        TxnLine(
            at=t.occurred_at,
            ref=t.ref,
            kind=t.kind,
            amount=str(from_minor(t.amount_minor, digits)) if t.amount_minor is not None else None,
            points=t.points,
            balance=t.balance_after,
            original=originals.get(t.original_id) if t.original_id else None,
            reason=t.reason,
        )
        for t in rows
    ]
    return lines[-limit:] if limit else lines
