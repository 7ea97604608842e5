"""Rewards and vouchers: the catalogue, redemptions, and each voucher's life.

A voucher goes issued → used | cancelled | expired. Redeeming takes the reward's cost
from the member's spendable lots, oldest-expiring first; cancelling puts the points back
into the very lots they came from, so they keep their expiry dates. An expired voucher's
points are not refunded: the member had the reward's value for ``valid_days``.

The voucher keeps a copy of the reward's terms (name, kind, value, product, cost), so a
reward repriced or removed in a later program version leaves issued vouchers as they were.

Locks, in this order when several are taken: member, then program (stock), then voucher.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from loyaltyctl.errors import Conflict, InvalidInput, NotAllowed, NotFound
from loyaltyctl.ledger.requests import Redeem, VoucherAction
from loyaltyctl.rules.program import Reward
from loyaltyctl.rules.timeutil import local_date
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.ledger import (
    Source,
    credit,
    debit,
    find_member,
    open_lots,
    pending_points,
    refund,
)
from loyaltyctl.services.txns import new_ref
from loyaltyctl.services.voucher_refs import claim_use_ref
from loyaltyctl.store.models import Member, PointsEntry, PointsLot, ProgramRow, Txn, Voucher

VOUCHER_STATUSES = ("issued", "used", "cancelled", "expired")

# No 0/O, 1/I/L: a code read aloud or copied from a receipt cannot be mistyped into
# another valid-looking one. 12 characters of 31 give about 59 bits: not guessable.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_GROUPS = 3
CODE_GROUP_LEN = 4
_CODE_LEN = CODE_GROUPS * CODE_GROUP_LEN
_CODE_SEPARATORS = re.compile(r"[\s-]+")


def new_voucher_code() -> str:
    chars = "".join(secrets.choice(CODE_ALPHABET) for _ in range(_CODE_LEN))
    return "-".join(chars[i : i + CODE_GROUP_LEN] for i in range(0, _CODE_LEN, CODE_GROUP_LEN))


def normalize_code(text: str) -> str:
    """What a person typed (any case, with or without dashes or spaces) as stored."""
    raw = _CODE_SEPARATORS.sub("", text).upper()
    if len(raw) != _CODE_LEN or any(ch not in CODE_ALPHABET for ch in raw):
        return text.strip()
    return "-".join(raw[i : i + CODE_GROUP_LEN] for i in range(0, _CODE_LEN, CODE_GROUP_LEN))


# ---- the catalogue and its rules ----------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """One rule that stops a member from redeeming a reward now."""

    rule: str  # status | tier | stock | per_member | points
    message: str
    hint: str | None = None


def refusals(
    reward: Reward,
    member: Member,
    *,
    available: int,
    pending: int,
    stock_left: int | None,
    live: int,
) -> list[Refusal]:
    """Every rule that refuses ``reward`` to ``member``, in the order redeem checks them."""
    found: list[Refusal] = []
    if member.status != "active":
        found.append(
            Refusal(
                "status",
                f"member {member.code} is {member.status} and cannot redeem rewards",
                f"reactivate it first with: loyaltyctl member reactivate {member.code}"
                if member.status == "suspended"
                else None,
            )
        )
    if reward.tiers and member.tier not in reward.tiers:
        found.append(
            Refusal(
                "tier",
                f"reward {reward.key} is only for tier{'s' if len(reward.tiers) > 1 else ''} "
                f"{', '.join(reward.tiers)}; member {member.code} is {member.tier}",
                "see what the member may redeem with: "
                f"loyaltyctl reward list --member {member.code}",
            )
        )
    if stock_left is not None and stock_left <= 0:
        found.append(
            Refusal(
                "stock",
                f"reward {reward.key} is out of stock (all {reward.stock} issued)",
                "a cancelled voucher returns its item to stock; or raise stock in the program",
            )
        )
    if reward.per_member is not None and live >= reward.per_member:
        found.append(
            Refusal(
                "per_member",
                f"member {member.code} already holds {live} live voucher"
                f"{'s' if live != 1 else ''} for reward {reward.key}, the most allowed "
                f"(per_member = {reward.per_member})",
                "use or cancel one first; see them with: "
                f"loyaltyctl voucher list --member {member.code} --status issued",
            )
        )
    if available < reward.cost:
        note = f" ({pending} more pending, not yet spendable)" if pending > 0 else ""
        found.append(
            Refusal(
                "points",
                f"insufficient points: reward {reward.key} costs {reward.cost}, member "
                f"{member.code} has {max(available, 0)} available{note}",
                f"{reward.cost - max(available, 0)} more points are needed",
            )
        )
    return found


def _issued_counts(session: Session, program_id: int) -> dict[str, int]:
    """Vouchers that hold an item of stock, by reward: all but the cancelled ones."""
    rows = session.exec(
        select(Voucher.reward_key, func.count())
        .where(Voucher.program_id == program_id, Voucher.status != "cancelled")
        .group_by(col(Voucher.reward_key))
    ).all()
    return {key: int(n) for key, n in rows}


def _stock_left(reward: Reward, issued: int) -> int | None:
    return None if reward.stock is None else max(reward.stock - issued, 0)


def _live_counts(session: Session, member_id: int, at: datetime) -> dict[str, int]:
    """The member's vouchers still usable at ``at``, by reward (``per_member`` counts
    these: one past its date cannot be used, whether or not the nightly job marked it)."""
    rows = session.exec(
        select(Voucher.reward_key, func.count())
        .where(
            Voucher.member_id == member_id,
            Voucher.status == "issued",
            col(Voucher.expires_at) > at,
        )
        .group_by(col(Voucher.reward_key))
    ).all()
    return {key: int(n) for key, n in rows}


def _spendable(session: Session, member: Member, at: datetime) -> tuple[list[PointsLot], int]:
    """Lots that may be spent at ``at`` (oldest-expiring first) and the points available:
    their remainders less any debt."""
    lots = open_lots(session, member, spendable_at=at)
    return lots, sum(lot.remaining for lot in lots) - member.debt


@dataclass
class RewardLine:
    reward: str
    name: str
    cost: int
    tiers: list[str]
    stock: int | None
    stock_left: int | None
    per_member: int | None
    valid_days: int
    kind: str
    value: str | None
    product: str | None
    description: str
    # Filled in only when a member is given.
    member: str | None = None
    affordable: bool | None = None
    allowed: bool | None = None
    redeemable: bool | None = None
    why_not: list[str] = field(default_factory=list)


def list_rewards(
    session: Session, ctx: ProgramContext, *, member: str | None = None, now: datetime
) -> list[RewardLine]:
    """The current catalogue with stock left; with ``member``, whether that member could
    redeem each reward now and, if not, every rule that stands in the way."""
    issued = _issued_counts(session, ctx.id)
    row: Member | None = None
    available = pending = 0
    live: dict[str, int] = {}
    if member is not None:
        row = find_member(session, ctx.id, member)
        assert row.id is not None
        _, available = _spendable(session, row, now)
        pending = pending_points(session, row.id, now)
        live = _live_counts(session, row.id, now)
    lines = []
    for reward in ctx.spec.rewards:
        left = _stock_left(reward, issued.get(reward.key, 0))
        line = RewardLine(
            reward=reward.key,
            name=reward.name,
            cost=reward.cost,
            tiers=list(reward.tiers),
            stock=reward.stock,
            stock_left=left,
            per_member=reward.per_member,
            valid_days=reward.valid_days,
            kind=reward.kind,
            value=str(reward.value) if reward.value is not None else None,
            product=reward.product,
            description=reward.description,
        )
        if row is not None:
            found = refusals(
                reward,
                row,
                available=available,
                pending=pending,
                stock_left=left,
                live=live.get(reward.key, 0),
            )
            line.member = row.code
            line.affordable = not any(r.rule == "points" for r in found)
            line.allowed = not any(r.rule != "points" for r in found)
            line.redeemable = not found
            line.why_not = [r.message for r in found]
        lines.append(line)
    return lines


# ---- redeem -------------------------------------------------------------------------


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


def _canonical(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _redeem_result(
    voucher: Voucher, member: Member, txn: Txn, *, duplicate: bool, now: datetime
) -> RedeemResult:
    return RedeemResult(
        voucher=voucher.code,
        reward=voucher.reward_key,
        name=voucher.reward_name,
        member=member.code,
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
    session: Session,
    ctx: ProgramContext,
    member: Member,
    ref: str,
    payload: dict[str, Any],
    at: datetime | None,
    now: datetime,
) -> RedeemResult | None:
    """The original result for an identical retry of ``ref``; Conflict for a different one.
    ``at`` counts only when the retry states it, as for transactions."""
    txn = session.exec(select(Txn).where(Txn.program_id == ctx.id, Txn.ref == ref)).first()
    if txn is None:
        return None
    stored = json.loads(txn.payload)
    same = txn.kind == "redeem" and {k: v for k, v in stored.items() if k != "at"} == payload
    if same and at is not None and txn.occurred_at != at:
        same = False
    voucher = session.exec(select(Voucher).where(Voucher.txn_id == txn.id)).first()
    if not same or voucher is None:
        raise Conflict(
            f"reference {ref} was already used for a different {txn.kind} in program {ctx.key}",
            hint="use a new --ref for a new redemption (or leave --ref out); "
            "an identical retry is safe",
        )
    return _redeem_result(voucher, member, txn, duplicate=True, now=now)


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
    """Issue a voucher for ``reward_key``, paid with the member's spendable points."""
    request = Redeem(member=code, reward=reward_key, ref=ref, at=at, now=now)
    code, reward_key, ref, at = request.member, request.reward, request.ref, request.at
    payload = request.payload()
    member = find_member(session, ctx.id, code, lock=True)
    if ref is not None:
        done = _earlier_redemption(session, ctx, member, ref, payload, at, now)
        if done:
            return done
    when = at or now
    version = ctx.version_at(when)
    reward = version.spec.reward(reward_key)
    if reward is None:
        raise NotFound(
            f"reward {reward_key} not found in program {ctx.key}",
            hint="see the rewards with: loyaltyctl reward list",
        )
    tz = version.spec.program.tz
    if local_date(when, tz) < local_date(member.enrolled_at, tz):
        raise InvalidInput(
            f"a redemption dated {local_date(when, tz)} is before member {member.code} "
            f"enrolled ({local_date(member.enrolled_at, tz)})",
            hint="check --at",
        )
    assert member.id is not None
    if reward.stock is not None:
        _lock_program(session, ctx.id)
    issued = _issued_counts(session, ctx.id).get(reward.key, 0)
    lots, available = _spendable(session, member, when)
    found = refusals(
        reward,
        member,
        available=available,
        pending=pending_points(session, member.id, when),
        stock_left=_stock_left(reward, issued),
        live=_live_counts(session, member.id, when).get(reward.key, 0),
    )
    if found:
        raise NotAllowed(found[0].message, hint=found[0].hint)
    txn = Txn(
        program_id=ctx.id,
        member_id=member.id,
        ref=ref if ref is not None else new_ref("redeem"),
        kind="redeem",
        occurred_at=when,
        recorded_at=now,
        payload=_canonical({**payload, "at": when.isoformat()}),
        points=-reward.cost,
        reason=reward.name,
        qual_at=when,
        program_version_id=version.id,
    )
    session.add(txn)
    session.flush()
    debit(
        session,
        member,
        Source(version.id, txn_id=txn.id),
        kind="redeem",
        points=reward.cost,
        at=when,
        now=now,
        lots=lots,
        allow_debt=False,
    )
    assert txn.id is not None
    voucher = Voucher(
        program_id=ctx.id,
        member_id=member.id,
        txn_id=txn.id,
        code=_unused_code(session),
        reward_key=reward.key,
        reward_name=reward.name,
        reward_kind=reward.kind,
        reward_value=str(reward.value) if reward.value is not None else None,
        reward_product=reward.product,
        points=reward.cost,
        status="issued",
        issued_at=when,
        expires_at=when + timedelta(days=reward.valid_days),
    )
    session.add(voucher)
    txn.balance_after = member.balance
    txn.tier_after = member.tier
    session.add(txn)
    session.flush()
    return _redeem_result(voucher, member, txn, duplicate=False, now=now)


# ---- a voucher's life ---------------------------------------------------------------


@dataclass
class VoucherView:
    code: str
    reward: str
    name: str
    member: str
    status: str
    kind: str
    value: str | None
    product: str | None
    points: int
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None
    cancelled_at: datetime | None
    expired_at: datetime | None
    ref: str
    cancel_ref: str | None
    _duplicate: bool = False  # reward use --ref: an identical retry (only its JSON says)


def effective_status(voucher: Voucher, now: datetime) -> str:
    """An issued voucher past its date is expired, even before the nightly job marks it."""
    if voucher.status == "issued" and voucher.expires_at <= now:
        return "expired"
    return voucher.status


def _views(
    session: Session,
    ctx: ProgramContext,
    where: Sequence[Any],
    now: datetime,
    limit: int | None = None,
) -> list[VoucherView]:
    """Vouchers matching ``where`` with their member and references, newest first, in
    one query."""
    cancel = aliased(Txn)
    stmt = (
        select(Voucher, Member.code, Txn.ref, cancel.ref)
        .join(Member, col(Member.id) == col(Voucher.member_id))
        .join(Txn, col(Txn.id) == col(Voucher.txn_id))
        .outerjoin(cancel, col(cancel.id) == col(Voucher.cancel_txn_id))
        .where(Voucher.program_id == ctx.id, *where)
        .order_by(col(Voucher.issued_at).desc(), col(Voucher.id).desc())
    )
    if limit:
        stmt = stmt.limit(limit)
    return [
        VoucherView(
            code=voucher.code,
            reward=voucher.reward_key,
            name=voucher.reward_name,
            member=member_code,
            status=effective_status(voucher, now),
            kind=voucher.reward_kind,
            value=voucher.reward_value,
            product=voucher.reward_product,
            points=voucher.points,
            issued_at=voucher.issued_at,
            expires_at=voucher.expires_at,
            used_at=voucher.used_at,
            cancelled_at=voucher.cancelled_at,
            expired_at=voucher.expired_at,
            ref=ref,
            cancel_ref=cancel_ref_,
        )
        for voucher, member_code, ref, cancel_ref_ in session.exec(stmt).all()
    ]


def _view(session: Session, ctx: ProgramContext, voucher: Voucher, now: datetime) -> VoucherView:
    return _views(session, ctx, [col(Voucher.id) == voucher.id], now)[0]


def _find_voucher(
    session: Session, ctx: ProgramContext, code: str, *, lock: bool = False
) -> Voucher:
    stmt = select(Voucher).where(Voucher.program_id == ctx.id, Voucher.code == normalize_code(code))
    if lock:
        # Re-read under the lock: the row may have changed since this session loaded it.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    voucher = session.exec(stmt).first()
    if voucher is None:
        raise NotFound(
            f"voucher {code.strip()} not found in program {ctx.key}",
            hint="check the code (letters and digits, e.g. ABCD-EFGH-JKMN); "
            "list a member's vouchers with: loyaltyctl voucher list --member M",
        )
    return voucher


def _refuse_before_issue(voucher: Voucher, when: datetime) -> None:
    if when < voucher.issued_at:
        raise InvalidInput(
            f"voucher {voucher.code} was issued at {voucher.issued_at.isoformat()}, "
            f"after {when.isoformat()}",
            hint="check --at",
        )


def _refuse_unless_live(
    voucher: Voucher, action: str, now: datetime, *, past_date_ok: bool = False
) -> None:
    if voucher.status == "used":
        assert voucher.used_at is not None
        raise NotAllowed(
            f"voucher {voucher.code} was already used on {voucher.used_at.isoformat()} "
            f"and cannot be {action}",
            hint=f"see it with: loyaltyctl voucher show {voucher.code}",
        )
    if voucher.status == "cancelled":
        raise NotAllowed(
            f"voucher {voucher.code} was cancelled and cannot be {action}",
            hint="its points went back to the member; redeem the reward again if wanted",
        )
    expired = (
        voucher.status == "expired"
        if past_date_ok
        else (effective_status(voucher, now) == "expired")
    )
    if expired:
        raise NotAllowed(
            f"voucher {voucher.code} expired on {voucher.expires_at.isoformat()} "
            f"and cannot be {action}",
            hint="an expired voucher's points are not refunded",
        )


def use_voucher(
    session: Session,
    ctx: ProgramContext,
    code: str,
    *,
    now: datetime,
    at: datetime | None = None,
    ref: str | None = None,
) -> VoucherView:
    """At the till: an issued voucher of an active member becomes used. Refused for one
    used, cancelled or past its date, so a voucher cannot be honoured twice."""
    request = VoucherAction(voucher=code, at=at, now=now)
    code, at = request.voucher, request.at
    voucher = _find_voucher(session, ctx, code, lock=True)
    if claim_use_ref(session, ctx, voucher, ref):  # an identical retry of a use
        return replace(_view(session, ctx, voucher, now), _duplicate=True)
    when = at or now
    _refuse_before_issue(voucher, when)
    _refuse_unless_live(voucher, "used", when)
    member = session.get(Member, voucher.member_id)
    assert member is not None
    if member.status != "active":
        raise NotAllowed(
            f"member {member.code} is {member.status}: its voucher {voucher.code} cannot be used",
            hint=f"reactivate it first with: loyaltyctl member reactivate {member.code}"
            if member.status == "suspended"
            else None,
        )
    voucher.status = "used"
    voucher.used_at = when
    session.add(voucher)
    session.flush()
    return _view(session, ctx, voucher, now)


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


def _taken_from_lots(session: Session, redeem_txn_id: int) -> list[tuple[PointsLot, int]]:
    """Which lots a redemption took its points from, and how many from each, in the
    order it took them."""
    rows = session.exec(
        select(PointsEntry.lot_id, PointsEntry.points)
        .where(PointsEntry.txn_id == redeem_txn_id, col(PointsEntry.lot_id).is_not(None))
        .order_by(col(PointsEntry.id))
    ).all()
    amounts: dict[int, int] = {}
    for lot_id, points in rows:
        assert lot_id is not None
        amounts[lot_id] = amounts.get(lot_id, 0) - points
    lots = session.exec(select(PointsLot).where(col(PointsLot.id).in_(list(amounts)))).all()
    by_id = {lot.id: lot for lot in lots}
    return [(by_id[lot_id], points) for lot_id, points in amounts.items() if points > 0]


def _pay_debt_first(
    taken: Sequence[tuple[PointsLot, int]], debt: int
) -> tuple[int, list[tuple[PointsLot, int]]]:
    """Refunded points settle a debt first (as new points do), taken from the soonest
    expiring; the rest goes back to its lots."""
    settle = min(debt, sum(points for _, points in taken))
    left = settle
    back: list[tuple[PointsLot, int]] = []
    for lot, points in taken:
        used = min(points, left)
        left -= used
        if points - used > 0:
            back.append((lot, points - used))
    return settle, back


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
    session: Session, voucher: Voucher, member: Member, txn: Txn, duplicate: bool
) -> CancelResult:
    assert txn.id is not None
    lots = _refunded_lots(session, txn.id)
    return CancelResult(
        voucher=voucher.code,
        reward=voucher.reward_key,
        member=member.code,
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
    code, at = request.voucher, request.at
    found = _find_voucher(session, ctx, code)
    member = session.exec(
        select(Member).where(Member.id == found.member_id).with_for_update()
    ).one()
    voucher = _find_voucher(session, ctx, code, lock=True)
    if voucher.status == "cancelled":
        assert voucher.cancel_txn_id is not None
        earlier = session.get(Txn, voucher.cancel_txn_id)
        assert earlier is not None
        return _cancel_result(session, voucher, member, earlier, True)
    when = at or now
    _refuse_before_issue(voucher, when)
    # Past its date but not yet expired by the nightly job, a voucher can still be
    # cancelled: its points go back to lots that keep their dates, so nothing is dodged.
    _refuse_unless_live(voucher, "cancelled", when, past_date_ok=True)
    version = ctx.version_at(when)
    assert member.id is not None
    txn = Txn(
        program_id=ctx.id,
        member_id=member.id,
        ref=cancel_ref(voucher.code),
        kind="refund",
        occurred_at=when,
        recorded_at=now,
        payload=_canonical(
            {
                "kind": "refund",
                "member": member.code,
                "voucher": voucher.code,
                "at": when.isoformat(),
            }
        ),
        points=voucher.points,
        original_id=voucher.txn_id,
        reason=f"voucher {voucher.code} cancelled",
        qual_at=when,
        program_version_id=version.id,
    )
    session.add(txn)
    session.flush()
    source = Source(version.id, txn_id=txn.id)
    settle, back = _pay_debt_first(_taken_from_lots(session, voucher.txn_id), member.debt)
    if settle:
        # Not more than the debt, so credit() only settles it and creates no lot.
        credit(
            session,
            member,
            source,
            kind="refund",
            lot_kind="refund",
            points=settle,
            at=when,
            now=now,
            available_at=when,
            expires_on=None,
        )
    refund(session, member, source, kind="refund", taken=back, at=when, now=now)
    voucher.status = "cancelled"
    voucher.cancelled_at = when
    voucher.cancel_txn_id = txn.id
    session.add(voucher)
    txn.balance_after = member.balance
    txn.tier_after = member.tier
    session.add(txn)
    session.flush()
    return _cancel_result(session, voucher, member, txn, False)


# ---- looking vouchers up ------------------------------------------------------------


def show_voucher(session: Session, ctx: ProgramContext, code: str, *, now: datetime) -> VoucherView:
    return _view(session, ctx, _find_voucher(session, ctx, code), now)


def list_vouchers(
    session: Session,
    ctx: ProgramContext,
    *,
    member: str | None = None,
    status: str | None = None,
    now: datetime,
    limit: int | None = None,
) -> list[VoucherView]:
    """Vouchers newest first; ``status`` is as of ``now`` (see ``effective_status``)."""
    if status is not None and status not in VOUCHER_STATUSES:
        raise InvalidInput(
            f"unknown voucher status {status!r}",
            hint="use one of: " + ", ".join(VOUCHER_STATUSES),
        )
    where: list[Any] = []
    if member is not None:
        where.append(col(Voucher.member_id) == find_member(session, ctx.id, member).id)
    if status == "issued":
        where += [col(Voucher.status) == "issued", col(Voucher.expires_at) > now]
    elif status == "expired":
        where.append(
            or_(
                col(Voucher.status) == "expired",
                (col(Voucher.status) == "issued") & (col(Voucher.expires_at) <= now),
            )
        )
    elif status is not None:
        where.append(col(Voucher.status) == status)
    return _views(session, ctx, where, now, limit)


# ---- the nightly job's part ---------------------------------------------------------


def expire_vouchers(
    session: Session, ctx: ProgramContext, *, as_of_end: datetime, now: datetime
) -> int:
    """Mark every issued voucher of the program whose ``expires_at`` is at or before
    ``as_of_end`` as expired (``expired_at = now``), in one UPDATE; returns how many.

    No points are refunded: the member held the reward for its ``valid_days`` and the
    points paid for that, as with a paper voucher left unused. Running it again for the
    same date finds nothing left to mark."""
    result = session.exec(
        update(Voucher)
        .where(
            col(Voucher.program_id) == ctx.id,
            col(Voucher.status) == "issued",
            col(Voucher.expires_at) <= as_of_end,
        )
        .values(status="expired", expired_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)
