"""Redemptions and voucher cancellations: the member, the reward's limits and the lots
loaded for the posting core (``ledger.vouchers``), its postings written with the store's
bulk writer in the session's transaction.

Locks, in this order when several are taken: member, then program (stock), then voucher.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlmodel import Session, col, select

from loyaltyctl.errors import Conflict, NotFound
from loyaltyctl.ledger import vouchers
from loyaltyctl.ledger.requests import Redeem, VoucherAction
from loyaltyctl.ledger.state import MemberState
from loyaltyctl.rules.versions import ProgramContext
from loyaltyctl.services import events
from loyaltyctl.services.imports.batch import Importer
from loyaltyctl.services.ledger import pending_points
from loyaltyctl.services.rewards import (
    _find_voucher,
    _issued_counts,
    _live_counts,
    _stock_left,
    effective_status,
    new_voucher_code,
)
from loyaltyctl.services.txns import new_ref
from loyaltyctl.store.bulk import Bulk
from loyaltyctl.store.lookups import fetch_spendable_lots, fetch_taken_lots, fetch_txns
from loyaltyctl.store.models import Member, PointsEntry, PointsLot, ProgramRow, Txn, Voucher


def _batch_of_one(
    session: Session, ctx: ProgramContext, code: str, now: datetime
) -> tuple[Importer, Bulk, MemberState]:
    """The driver of the posting core for one member, locked (PostgreSQL)."""
    driver = Importer(ctx, now=now, keeps_locks=False, lock=False)
    bulk = driver._start(session)
    driver._fetch_members(session, {code})
    m = driver.kernel.members.get(code)
    if m is None:
        raise driver.kernel.not_found(code)
    return driver, bulk, m


@dataclass
class RedeemResult:
    voucher: str
    reward: str
    name: str
    member: str
    ref: str
    points: int
    balance: int
    issued: datetime
    expires: datetime
    status: str
    kind: str
    value: str | None
    product: str | None
    duplicate: bool


def _redeem_result(
    voucher: Voucher, member: str, txn: Txn, *, duplicate: bool, now: datetime
) -> RedeemResult:
    return RedeemResult(
        voucher=voucher.code,
        reward=voucher.reward_key,
        name=voucher.reward_name,
        member=member,
        ref=txn.ref,
        points=txn.points,
        balance=txn.balance_after,
        issued=voucher.issued_at,
        expires=voucher.expires_at,
        status=effective_status(voucher, now),
        kind=voucher.reward_kind,
        value=voucher.reward_value,
        product=voucher.reward_product,
        duplicate=duplicate,
    )


def _earlier_redemption(
    session: Session, ctx: ProgramContext, request: Redeem, now: datetime
) -> RedeemResult | None:
    """The original result for an identical retry of the request's ref; Conflict for a
    different one. The time counts only when the retry states it, as for transactions."""
    assert request.ref is not None
    found = fetch_txns(session, ctx.id, [request.ref]).get(request.ref)
    if found is None:
        return None
    same = found.kind == "redeem" and found.same_request(request.payload(), request.at)
    voucher = session.exec(select(Voucher).where(Voucher.txn_id == found.id)).first()
    if not same or voucher is None:
        raise Conflict(
            f"reference {request.ref} was already used for a different {found.kind} "
            f"in program {ctx.key}",
            hint="use a new --ref for a new redemption (or leave --ref out); "
            "an identical retry is safe",
        )
    txn = session.get(Txn, found.id)
    assert txn is not None
    return _redeem_result(voucher, request.member, txn, duplicate=True, now=now)


def _lock_program(session: Session, program_id: int) -> None:
    """Hold the program row until commit (PostgreSQL), so that two redeemers of one
    reward count its stock one after the other. SQLite's BEGIN IMMEDIATE already
    serializes every writer, and renders no FOR UPDATE."""
    session.exec(select(ProgramRow.id).where(ProgramRow.id == program_id).with_for_update()).one()


def _unused_code(session: Session) -> str:
    for _ in range(10):
        code = new_voucher_code()
        taken = session.exec(select(Voucher.id).where(Voucher.code == code)).first()
        if taken is None:
            return code
    raise AssertionError("could not draw an unused voucher code in 10 tries")


def redeem(
    session: Session,
    ctx: ProgramContext,
    code: str,
    reward_key: str,
    *,
    ref: str | None,
    at: datetime | None,
    now: datetime,
) -> RedeemResult:
    """Issue a voucher for ``reward_key``, paid with the member's spendable points. With
    ``ref``, an identical retry reports the original voucher."""
    request = Redeem(member=code, reward=reward_key, ref=ref, at=at, now=now)
    driver, bulk, m = _batch_of_one(session, ctx, request.member, now)
    if request.ref is not None:
        done = _earlier_redemption(session, ctx, request, now)
        if done:
            return done
    when = request.when
    rules = driver.book.at(when)
    reward = rules.spec.reward(request.reward)
    if reward is None:
        raise NotFound(
            f"reward {request.reward} not found in program {ctx.key}",
            hint="see the rewards with: loyaltyctl reward list",
        )
    if reward.stock is not None:
        _lock_program(session, ctx.id)
    at_s = bulk.ts(when)
    m.lots = fetch_spendable_lots(session, m.id, at_s)
    m.lots_complete = True
    limits = vouchers.Limits(
        stock_left=_stock_left(reward, _issued_counts(session, ctx.id).get(reward.key, 0)),
        live=_live_counts(session, m.id, when).get(reward.key, 0),
        pending=pending_points(session, m.id, when),
    )
    txn_ref = request.ref if request.ref is not None else new_ref("redeem")
    postings = driver._new_batch(bulk, 1, 0)
    issued = vouchers.redeem(
        driver.kernel, m, rules, reward, ref=txn_ref, when=when, code=_unused_code(session),
        limits=limits,
    )  # fmt: skip
    driver._finish(bulk, postings)
    voucher = session.exec(select(Voucher).where(Voucher.code == issued.code)).one()
    txn = session.get(Txn, issued.txn_id)
    assert txn is not None
    events.voucher_event(session, "voucher.issued", voucher, m.code, now)
    return _redeem_result(voucher, m.code, txn, duplicate=False, now=now)


@dataclass
class Refunded:
    expires_on: date | None
    points: int


@dataclass
class CancelResult:
    voucher: str
    reward: str
    member: str
    ref: str
    points: int
    balance: int
    debt_settled: int
    lots: list[Refunded]
    duplicate: bool


def cancel_ref(voucher_code: str) -> str:
    return f"cancel:{voucher_code}"


def _refunded_lots(session: Session, refund_txn_id: int) -> list[Refunded]:
    rows = session.exec(
        select(col(PointsLot.expires_on), PointsEntry.points)
        .select_from(PointsEntry)
        .join(PointsLot, col(PointsLot.id) == col(PointsEntry.lot_id))
        .where(PointsEntry.txn_id == refund_txn_id)
        .order_by(col(PointsEntry.id))
    ).all()
    return [Refunded(expires_on, points) for expires_on, points in rows]


def _cancel_result(
    session: Session, voucher: Voucher, member: str, txn: Txn, duplicate: bool
) -> CancelResult:
    assert txn.id is not None
    lots = _refunded_lots(session, txn.id)
    return CancelResult(
        voucher=voucher.code,
        reward=voucher.reward_key,
        member=member,
        ref=txn.ref,
        points=txn.points,
        balance=txn.balance_after,
        debt_settled=txn.points - sum(lot.points for lot in lots),
        lots=lots,
        duplicate=duplicate,
    )


def cancel_voucher(
    session: Session, ctx: ProgramContext, code: str, *, now: datetime, at: datetime | None = None
) -> CancelResult:
    """Cancel an issued voucher: its points go back into the lots they came from, with
    their original expiry dates (a lot already past its date goes at the next ``expire``
    run, so cancelling cannot dodge expiry), and its item returns to stock. Cancelling
    a cancelled voucher again is a no-op that reports the original result."""
    request = VoucherAction(voucher=code, at=at, now=now)
    found = _find_voucher(session, ctx, request.voucher)
    member_code = session.exec(select(Member.code).where(Member.id == found.member_id)).one()
    driver, bulk, m = _batch_of_one(session, ctx, member_code, now)
    voucher = _find_voucher(session, ctx, request.voucher, lock=True)
    assert voucher.id is not None
    if voucher.status == "cancelled":
        assert voucher.cancel_txn_id is not None
        earlier = session.get(Txn, voucher.cancel_txn_id)
        assert earlier is not None
        return _cancel_result(session, voucher, member_code, earlier, True)
    when = request.when
    taken = fetch_taken_lots(session, voucher.txn_id)
    postings = driver._new_batch(bulk, 1, 0)
    refund = vouchers.cancel(
        driver.kernel, m, driver.book.at(when), voucher, voucher_id=voucher.id,
        redeem_txn_id=voucher.txn_id, points=voucher.points,
        taken=[(lot, points) for lot, points, _ in taken], when=when,
    )  # fmt: skip
    driver._finish(bulk, postings)
    session.refresh(voucher)
    events.voucher_event(session, "voucher.cancelled", voucher, member_code, now)
    expiry = {lot.id: expires for lot, _, expires in taken}
    return CancelResult(
        voucher=voucher.code,
        reward=voucher.reward_key,
        member=member_code,
        ref=cancel_ref(voucher.code),
        points=refund.points,
        balance=refund.balance,
        debt_settled=refund.settled,
        lots=[Refunded(expiry[lot.id], points) for lot, points in refund.back],
        duplicate=False,
    )
