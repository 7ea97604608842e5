"""The rules of rewards and vouchers: who may redeem what, and what a voucher's state
allows. Pure: they read a member's and a voucher's fields, whoever holds them (an ORM
row, the posting core's member state)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from loyaltyctl.errors import InvalidInput, NotAllowed
from loyaltyctl.rules.program import Reward


class MemberLike(Protocol):
    code: str
    status: str
    tier: str


def refuse_inactive(member: MemberLike, action: str) -> None:
    """Only an active member earns, redeems or uses a voucher."""
    if member.status != "active":
        raise NotAllowed(
            f"member {member.code} is {member.status} and cannot {action}",
            hint=f"reactivate it first with: loyaltyctl member reactivate {member.code}"
            if member.status == "suspended"
            else None,
        )


class VoucherLike(Protocol):
    code: str
    status: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True)
class Refusal:
    """One rule that stops a member from redeeming a reward now."""

    rule: str  # status | tier | stock | per_member | points
    message: str
    hint: str | None = None


def refusals(
    reward: Reward,
    member: MemberLike,
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


def effective_status(voucher: VoucherLike, now: datetime) -> str:
    """An issued voucher past its date is expired, even before the nightly job marks it."""
    if voucher.status == "issued" and voucher.expires_at <= now:
        return "expired"
    return voucher.status


def refuse_before_issue(voucher: VoucherLike, when: datetime) -> None:
    if when < voucher.issued_at:
        raise InvalidInput(
            f"voucher {voucher.code} was issued at {voucher.issued_at.isoformat()}, "
            f"after {when.isoformat()}",
            hint="check --at",
        )


def refuse_unless_live(
    voucher: VoucherLike, action: str, now: datetime, *, past_date_ok: bool = False
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
