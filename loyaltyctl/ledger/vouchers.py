"""Redemptions and voucher cancellations in the posting core.

A redemption takes the reward's cost from the member's spendable lots, oldest-expiring
first, and issues a voucher; cancelling it puts the points back into the very lots they
came from (a debt first), so they keep their expiry dates. Pure like ``kernel``: the
driver loads the member's spendable lots (or the lots a redemption took), the counts the
reward's limits need, and draws the voucher's code; these functions decide and collect
the postings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from loyaltyctl.errors import InvalidInput, NotAllowed
from loyaltyctl.ledger.kernel import Kernel
from loyaltyctl.ledger.postings import plan_debit, split_refund
from loyaltyctl.ledger.requests import canonical
from loyaltyctl.ledger.rulebook import VersionRules
from loyaltyctl.ledger.state import MemberState, OpenLot
from loyaltyctl.rules.program import Reward
from loyaltyctl.rules.rewards import VoucherLike, refusals, refuse_before_issue, refuse_unless_live
from loyaltyctl.rules.timeutil import local_date


@dataclass(frozen=True)
class Limits:
    """What the reward's rules need to know beyond the member: items of stock left (None:
    unlimited), the member's live vouchers of this reward, points still pending."""

    stock_left: int | None
    live: int
    pending: int


@dataclass(frozen=True)
class Issued:
    code: str
    txn_id: int
    points: int
    balance: int
    issued_at: datetime
    expires_at: datetime


def redeem(
    kernel: Kernel,
    m: MemberState,
    rules: VersionRules,
    reward: Reward,
    *,
    ref: str,
    when: datetime,
    code: str,
    limits: Limits,
) -> Issued:
    """Issue a voucher for ``reward``, paid from ``m.lots`` (the lots spendable at
    ``when``, in the order debits take them)."""
    tz = kernel.book.tz
    if m.before_enrolment(when, tz):
        raise InvalidInput(
            f"a redemption dated {local_date(when, tz)} is before member {m.code} enrolled "
            f"({m.enrolled_day(tz)})",
            hint="check --at",
        )
    assert m.lots is not None
    available = sum(lot.remaining for lot in m.lots) - m.debt
    found = refusals(
        reward,
        m,
        available=available,
        pending=limits.pending,
        stock_left=limits.stock_left,
        live=limits.live,
    )
    if found:
        raise NotAllowed(found[0].message, hint=found[0].hint)
    plan, short = plan_debit(m.lots, reward.cost)
    assert not short, "refusals() checked the points available"
    postings = kernel.postings
    txn_id = postings.next_txn_id()
    at_s, at_iso = postings.ts_iso(when)
    postings.debit(m, txn_id, rules.id, kind="redeem", plan=plan, short=0, at_s=at_s)
    payload = canonical({"kind": "redeem", "member": m.code, "reward": reward.key, "at": at_iso})
    kernel.store(
        (
            txn_id, kernel.program_id, m.id, ref, "redeem", at_s, postings.now_s, None, payload,
            -reward.cost, m.balance, m.tier, None, reward.name, 0, 0, 0, at_s, rules.id, None,
        ),
        when,
        when,
    )  # fmt: skip
    expires = when + timedelta(days=reward.valid_days)
    postings.vouchers.append(
        (
            kernel.program_id, m.id, txn_id, code, reward.key, reward.name, reward.kind,
            str(reward.value) if reward.value is not None else None, reward.product,
            reward.cost, "issued", at_s, postings.ts(expires),
        )
    )  # fmt: skip
    return Issued(code, txn_id, -reward.cost, m.balance, when, expires)


@dataclass(frozen=True)
class Refund:
    txn_id: int
    points: int
    balance: int
    settled: int
    back: list[tuple[OpenLot, int]]


def cancel(
    kernel: Kernel,
    m: MemberState,
    rules: VersionRules,
    voucher: VoucherLike,
    *,
    voucher_id: int,
    redeem_txn_id: int,
    points: int,
    taken: list[tuple[OpenLot, int]],
    when: datetime,
) -> Refund:
    """Cancel an issued voucher: ``taken`` (the lots its redemption took from, in the
    order it took them) get their points back, a debt first. Past its date but not yet
    expired by the nightly job a voucher can still be cancelled: its points go back to
    lots that keep their dates, so nothing is dodged."""
    refuse_before_issue(voucher, when)
    refuse_unless_live(voucher, "cancelled", when, past_date_ok=True)
    settle, back = split_refund(taken, m.debt)
    postings = kernel.postings
    txn_id = postings.next_txn_id()
    at_s, at_iso = postings.ts_iso(when)
    postings.refund(m, txn_id, rules.id, back, settle, at_s)
    payload = canonical({"kind": "refund", "member": m.code, "voucher": voucher.code, "at": at_iso})
    kernel.store(
        (
            txn_id, kernel.program_id, m.id, f"cancel:{voucher.code}", "refund", at_s,
            postings.now_s, None, payload, points, m.balance, m.tier, redeem_txn_id,
            f"voucher {voucher.code} cancelled", 0, 0, 0, at_s, rules.id, None,
        ),
        when,
        when,
    )  # fmt: skip
    postings.voucher_updates.append(("cancelled", at_s, txn_id, voucher_id))
    return Refund(txn_id, points, m.balance, settle, back)
