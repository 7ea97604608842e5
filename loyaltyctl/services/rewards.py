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

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from loyaltyctl.errors import InvalidInput, NotFound
from loyaltyctl.ledger.requests import VoucherAction
from loyaltyctl.rules.program import Reward
from loyaltyctl.rules.rewards import (
    effective_status,
    refusals,
    refuse_before_issue,
    refuse_inactive,
    refuse_unless_live,
)
from loyaltyctl.services import events
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.ledger import (
    find_member,
    pending_points,
    spendable_points,
)
from loyaltyctl.services.voucher_refs import claim_use_ref
from loyaltyctl.store.models import Member, Txn, Voucher

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


def _available(session: Session, member: Member, at: datetime) -> int:
    """Points the member may spend at ``at``: its spendable lots' remainders less any debt."""
    assert member.id is not None
    return spendable_points(session, member.id, at) - member.debt


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
        available = _available(session, row, now)
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
    refuse_before_issue(voucher, when)
    refuse_unless_live(voucher, "used", when)
    member = session.get(Member, voucher.member_id)
    assert member is not None
    refuse_inactive(member, f"use voucher {voucher.code}")
    voucher.status = "used"
    voucher.used_at = when
    session.add(voucher)
    session.flush()
    events.voucher_event(session, "voucher.used", voucher, member.code, now)
    return _view(session, ctx, voucher, now)


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
    events.vouchers_expired(session, ctx.id, now)
    return int(result.rowcount or 0)
