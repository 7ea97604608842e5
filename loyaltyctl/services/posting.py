"""Single commands through the posting core: a purchase, return, adjustment or
enrolment is a batch of one, loaded, applied by ``ledger.kernel`` and written by the
same code as an import, so a single command and an import row cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from loyaltyctl.ledger.requests import Adjust, Enroll, MemberRow, Purchase, Return, txn_row
from loyaltyctl.rules.versions import ProgramContext
from loyaltyctl.services.imports.member_rows import MemberImporter
from loyaltyctl.services.imports.txn_rows import TxnImporter, check_store
from loyaltyctl.store.models import Txn


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


@dataclass
class EnrollResult:
    member: str
    program: str
    tier: str
    balance: int
    points: int
    duplicate: bool


def post_request(
    session: Session,
    ctx: ProgramContext,
    request: Purchase | Return | Adjust,
    now: datetime,
    *,
    store: str | None = None,
) -> TxnResult:
    """Apply one purchase, return or adjustment in the session's transaction. Only its
    member is locked (PostgreSQL), so writers of other members go on meanwhile."""
    importer = TxnImporter(ctx, now=now, keeps_locks=False, lock=False)
    row = txn_row(request, importer.book.at, lambda rules: rules.tz)
    row.store = check_store(store, "--store")
    importer.prepare(session, [row])
    if not importer.kernel.apply_txn(row):
        return _earlier(session, ctx, request.ref)
    importer.finish()
    txn = importer.kernel.applied[row.ref][0]
    return TxnResult(row.ref, row.member, row.kind, txn[9], txn[10], txn[11], False, row.when)


def _earlier(session: Session, ctx: ProgramContext, ref: str) -> TxnResult:
    """What an identical retry reports: the stored transaction's result."""
    from loyaltyctl.store.models import Member

    txn = session.exec(select(Txn).where(Txn.program_id == ctx.id, Txn.ref == ref)).one()
    member = session.get(Member, txn.member_id)
    assert member is not None
    return TxnResult(
        ref, member.code, txn.kind, txn.points, txn.balance_after, txn.tier_after, True,
        txn.occurred_at,
    )  # fmt: skip


def enroll_request(
    session: Session, ctx: ProgramContext, request: Enroll, now: datetime
) -> EnrollResult:
    """Enroll one member (signup bonus included); an identical repeat is a no-op."""
    importer = MemberImporter(ctx, now=now, keeps_locks=False, lock=False)
    row = MemberRow(None, request.member, request.details(), request.when, 0, None)
    importer.prepare(session, [row])
    kernel = importer.kernel
    applied = kernel.enrol_or_repeat(row)
    importer.finish()
    m = kernel.members[request.member]
    bonus = kernel.book.at(request.when).signup_bonus if applied else 0
    return EnrollResult(m.code, ctx.key, m.tier, m.balance, bonus, not applied)
