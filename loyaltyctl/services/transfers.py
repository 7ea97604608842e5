"""Transfers between members: both members (locked in code order on PostgreSQL) and the
source's spendable lots loaded for the posting core (``ledger.transfers``), its
postings written with the store's bulk writer in the session's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from loyaltyctl.errors import Conflict
from loyaltyctl.ledger import transfers
from loyaltyctl.ledger.kernel import Kernel
from loyaltyctl.ledger.requests import Transfer
from loyaltyctl.ledger.state import MemberState
from loyaltyctl.rules.versions import ProgramContext
from loyaltyctl.services.imports.batch import Importer
from loyaltyctl.services.ledger import pending_points
from loyaltyctl.store.bulk import Bulk
from loyaltyctl.store.lookups import fetch_spendable_lots, fetch_txns
from loyaltyctl.store.models import Txn


@dataclass
class TransferResult:
    ref: str
    member: str
    to: str
    kind: str
    points: int
    balance: int
    tier: str
    to_balance: int
    duplicate: bool
    at: datetime


def batch_of_two(
    session: Session, ctx: ProgramContext, source: str, target: str, now: datetime
) -> tuple[Importer, Bulk, MemberState, MemberState]:
    """The driver of the posting core for two members, both locked (PostgreSQL) in code
    order, so that two commands that touch the same two members cannot deadlock."""
    driver = Importer(ctx, now=now, keeps_locks=False, lock=False)
    bulk = driver._start(session)
    driver._fetch_members(session, {source, target})
    kernel: Kernel = driver.kernel
    found = [kernel.members.get(code) for code in (source, target)]
    for code, m in zip((source, target), found, strict=True):
        if m is None:
            raise kernel.not_found(code)
    src, dst = found
    assert src is not None and dst is not None
    return driver, bulk, src, dst


def earlier_pair(
    session: Session, ctx: ProgramContext, ref: str, kind: str, payload: dict[str, object]
) -> tuple[Txn, Txn] | None:
    """The stored pair (source's, target's) of an identical retry of ``ref``; None for a
    new ref; Conflict for a different request under it."""
    found = fetch_txns(session, ctx.id, [ref]).get(ref)
    if found is None:
        return None
    if found.kind != kind or not found.same_request(payload, None):
        raise Conflict(
            f"reference {ref} was already used for a different {found.kind} in program {ctx.key}",
            hint=f"use a new --ref for a new {kind}; an identical retry is safe",
        )
    out = session.get(Txn, found.id)
    assert out is not None
    inn = session.exec(select(Txn).where(Txn.original_id == found.id, Txn.kind == kind)).first()
    assert inn is not None
    return out, inn


def transfer(
    session: Session,
    ctx: ProgramContext,
    source: str,
    target: str,
    *,
    points: int,
    ref: str,
    reason: str | None = None,
    now: datetime,
) -> TransferResult:
    """Move ``points`` available points from ``source`` to ``target``, oldest-expiring
    first, keeping their expiry dates. An identical retry reports the original result."""
    request = Transfer(source=source, target=target, points=points, ref=ref, reason=reason, now=now)
    driver, bulk, src, dst = batch_of_two(session, ctx, request.source, request.target, now)
    done = earlier_pair(session, ctx, request.ref, "transfer", request.payload())
    if done is not None:
        out, inn = done
        return TransferResult(
            out.ref, src.code, dst.code, "transfer", out.points, out.balance_after,
            out.tier_after, inn.balance_after, True, out.occurred_at,
        )  # fmt: skip
    when = request.when
    at_s = bulk.ts(when)
    src.lots = fetch_spendable_lots(session, src.id, at_s)
    src.lots_complete = True
    pending = pending_points(session, src.id, when)
    postings = driver._new_batch(bulk, 2, len(src.lots))
    moved = transfers.transfer(
        driver.kernel, src, dst, driver.book.at(when), request, pending=pending
    )
    driver._finish(bulk, postings)
    return TransferResult(
        request.ref, src.code, dst.code, "transfer", moved.points, moved.balance, src.tier,
        moved.target_balance, False, when,
    )  # fmt: skip
