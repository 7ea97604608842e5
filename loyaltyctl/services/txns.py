"""Purchases, returns and adjustments: each idempotent on its reference."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel import Session, col, select

from loyaltyctl.ledger.requests import Adjust, Purchase, Return
from loyaltyctl.rules.earning import Line
from loyaltyctl.rules.money import from_minor
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.ledger import find_member
from loyaltyctl.services.posting import TxnResult, post_request
from loyaltyctl.store.models import Txn

__all__ = ["TxnResult", "list_txns", "new_ref", "post_adjustment", "post_purchase", "post_return"]


def new_ref(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def post_purchase(
    session: Session,
    ctx: ProgramContext,
    code: str,
    *,
    ref: str,
    lines: Sequence[Line],
    at: datetime | None,
    now: datetime,
    store: str | None = None,
) -> TxnResult:
    """Points by the program's earning rules, one lot, maybe an upgrade; an identical
    retry of ``ref`` reports the original result. ``store``: the shop or till."""
    digits = ctx.spec.program.minor_digits
    request = Purchase(member=code, ref=ref, lines=tuple(lines), at=at, digits=digits, now=now)
    return post_request(session, ctx, request, now, store=store)


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
    """Claw back the purchase's points in proportion to the amount returned."""
    digits = ctx.spec.program.minor_digits
    request = Return(
        member=code, ref=ref, original=original_ref, amount=amount, at=at, digits=digits, now=now
    )
    return post_request(session, ctx, request, now)


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
    """Add (a new lot) or take (oldest-expiring first) points, with a reason."""
    request = Adjust(member=code, ref=ref, points=points, reason=reason, at=at, now=now)
    return post_request(session, ctx, request, now)


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
