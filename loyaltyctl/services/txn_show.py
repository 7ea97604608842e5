"""``txn show REF``: how a transaction's points were worked out.

A purchase is explained again from what is stored — its lines (the canonical payload),
the program version it was posted under, the tier the member held on its day — by the
same arithmetic that earned them (``rules.earning.explain``); the lots and entries it
made are read from the ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from loyaltyctl.errors import NotFound
from loyaltyctl.rules.earning import Line, explain
from loyaltyctl.rules.limits import check_ref
from loyaltyctl.rules.money import format_amount, from_minor
from loyaltyctl.rules.timeutil import as_utc, local_date
from loyaltyctl.rules.versions import ProgramContext
from loyaltyctl.store.models import Member, PointsEntry, PointsLot, TierChangeRow, Txn


@dataclass
class TxnDetail:
    ref: str
    member: str
    kind: str
    at: datetime
    amount: str | None
    points: int
    program_version: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    tier: str | None = None
    tier_multiplier: str | None = None
    promotions: list[dict[str, Any]] = field(default_factory=list)
    per_unit: str | None = None
    rounding: str | None = None
    before_rounding: str | None = None
    reason: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)


def show_txn(session: Session, ctx: ProgramContext, ref: str) -> TxnDetail:
    ref = check_ref(ref)
    txn = session.exec(select(Txn).where(Txn.program_id == ctx.id, Txn.ref == ref)).first()
    if txn is None:
        raise NotFound(
            f"transaction {ref} not found in program {ctx.key}",
            hint="see a member's transactions with: loyaltyctl txn list MEMBER",
        )
    member = session.get(Member, txn.member_id)
    assert member is not None and txn.id is not None
    version = next(v for v in ctx.versions if v.id == txn.program_version_id)
    spec = version.spec
    digits = spec.program.minor_digits
    detail = TxnDetail(
        ref=txn.ref,
        member=member.code,
        kind=txn.kind,
        at=as_utc(txn.occurred_at),
        amount=(
            format_amount(from_minor(txn.amount_minor, digits), digits)
            if txn.amount_minor is not None
            else None
        ),
        points=txn.points,
        program_version=version.version,
        reason=txn.reason,
        entries=_entries(session, txn.id),
    )
    if txn.kind == "purchase":
        day = local_date(as_utc(txn.occurred_at), spec.program.tz)
        tier = _tier_before(session, txn, day) or member.tier
        stored = json.loads(txn.payload)["lines"]
        lines = [Line(category, Decimal(amount)) for category, amount in stored]
        why = explain(spec, lines, tier, day)
        detail.lines = [
            {
                "category": part.category,
                "amount": format_amount(part.amount, digits),
                "multiplier": str(part.multiplier),
                "excluded": part.excluded,
                "promotions": [name for name, _ in part.promotions],
            }
            for part in why.lines
        ]
        detail.tier = why.tier
        detail.tier_multiplier = str(why.tier_multiplier)
        detail.promotions = [{"name": n, "multiplier": str(m)} for n, m in why.promotions]
        detail.per_unit = str(why.per_unit)
        detail.rounding = why.rounding
        detail.before_rounding = str(why.base)
    return detail


def _tier_before(session: Session, txn: Txn, day: date) -> str | None:
    """The tier the member held when the purchase was posted, on its day: the latest
    step dated up to that day that was recorded before it (an upgrade the purchase itself
    caused counts from the next transaction)."""
    step = session.exec(
        select(TierChangeRow.tier)
        .where(
            TierChangeRow.member_id == txn.member_id,
            col(TierChangeRow.effective_on) <= day,
            col(TierChangeRow.recorded_at) <= txn.recorded_at,
            (col(TierChangeRow.txn_id).is_(None)) | (col(TierChangeRow.txn_id) != txn.id),
        )
        .order_by(col(TierChangeRow.effective_on).desc(), col(TierChangeRow.id).desc())
        .limit(1)
    ).first()
    return step


def _entries(session: Session, txn_id: int) -> list[dict[str, Any]]:
    rows = session.exec(
        select(col(PointsEntry.kind), col(PointsEntry.points), col(PointsLot.expires_on))
        .select_from(PointsEntry)
        .outerjoin(PointsLot, col(PointsLot.id) == col(PointsEntry.lot_id))
        .where(PointsEntry.txn_id == txn_id)
        .order_by(col(PointsEntry.id))
    ).all()
    return [
        {
            "kind": kind,
            "points": int(points),
            "expires_on": expires.isoformat() if expires else None,
        }
        for kind, points, expires in rows
    ]
