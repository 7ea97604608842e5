"""Merges of two memberships in the posting core.

Everything on the source moves to the target in one batch:

- **lots**: each of the source's open lots (pending ones too) is emptied by an entry of
  the source and becomes a new lot of the target with the same earning time, expiry date
  and pending date, so an expiry run expires exactly those points on their own dates. A
  lot is moved rather than re-pointed because every entry's lot must be its member's
  (``db check``), and the source's past entries stay on its lots;
- **debt**: settled on the source by a lot-less entry and taken on by the target (the
  target's next earning pays it, as any debt);
- **qualifying activity**: copied to the target with its dates (one row per distinct
  ``qual_at``), so the target's window counts it where it happened;
- **live vouchers**: handed to the target. The points a voucher took stay spent, but a
  cancellation must give them back to the voucher's new holder, into lots of its own:
  the target gets the voucher's lots (same dates) and a transaction of its own takes them
  at once; the voucher points at that transaction, so cancelling refunds there;
- **tier**: the target keeps the higher of the two tiers, or what the combined activity
  qualifies for if that is higher (a tier history step with reason ``merge``).

The source ends ``merged`` with a zero balance and no debt (its status is the driver's
to write). Pure like ``kernel``: the driver loads both members locked, the source's open
lots, its activity and live vouchers, and the combined activity of the window."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from loyaltyctl.errors import NotAllowed
from loyaltyctl.ledger.kernel import Kernel
from loyaltyctl.ledger.requests import Merge, canonical
from loyaltyctl.ledger.rulebook import VersionRules
from loyaltyctl.ledger.state import MemberState, OpenLot
from loyaltyctl.ledger.transfers import refuse_same
from loyaltyctl.rules.tiers import qualified_level
from loyaltyctl.rules.timeutil import local_date


def merge_in_ref(ref: str) -> str:
    return f"merge-in:{ref}"


@dataclass(frozen=True)
class Activity:
    """Qualifying activity of the source at one instant (summed over its transactions)."""

    qual_at: Any  # as stored
    points: int
    spend_minor: int
    visits: int


@dataclass(frozen=True)
class LiveVoucher:
    id: int
    code: str
    cost: int
    taken: list[tuple[OpenLot, int]]  # the source's lots its redemption took from


@dataclass(frozen=True)
class Merged:
    txn_id: int
    in_txn_id: int
    points_moved: int
    balance: int
    tier: str
    # (voucher id, the target's transaction that now holds its points)
    vouchers: list[tuple[int, int]]


def refuse(m: MemberState, role: str) -> None:
    if m.erased or m.status in ("closed", "merged"):
        state = "erased" if m.erased else m.status
        raise NotAllowed(
            f"member {m.code} is {state} and cannot be merged (it is the {role})",
            hint="only active or suspended members can be merged",
        )


def merge(
    kernel: Kernel,
    source: MemberState,
    target: MemberState,
    rules: VersionRules,
    request: Merge,
    *,
    lots: list[tuple[OpenLot, Any]],
    activity: list[Activity],
    vouchers: list[LiveVoucher],
    combined: Decimal,
) -> Merged:
    """Fold ``source`` into ``target``. ``lots``: the source's open lots with their
    stored ``available_at``; ``combined``: both members' activity in the window ending
    today, in the metric's unit (currency for spend)."""
    refuse_same(source, target, "merge")
    refuse(source, "source")
    refuse(target, "target")
    postings = kernel.postings
    when = request.when
    day = local_date(when, rules.tz)
    at_s, at_iso = postings.ts_iso(when)
    payload = canonical({**request.payload(), "at": at_iso})
    out_id = postings.next_txn_id()
    in_id = postings.next_txn_id()
    before = source.balance
    moves = [(lot, lot.remaining, available_s) for lot, available_s in lots if lot.remaining]
    plan = [(lot, take) for lot, take, _ in moves]
    postings.debit(source, out_id, rules.id, kind="merge", plan=plan, short=0, at_s=at_s)
    for lot, take, available_s in moves:
        postings.move_in(
            target, in_id, rules.id, "merge", lot, take, at_s,
            available_s=available_s, settle=False,
        )  # fmt: skip
    debt = source.debt
    if debt:
        postings.entry(source, out_id, None, "merge", debt, at_s, rules.id)
        postings.entry(target, in_id, None, "merge", -debt, at_s, rules.id)
    moved_vouchers: list[tuple[int, int]] = []
    for voucher in vouchers:
        hold_id = postings.next_txn_id()
        hold_plan: list[tuple[OpenLot, int]] = []
        for lot, points in voucher.taken:
            new = postings.move_in(
                target, in_id, rules.id, "merge", lot, points, at_s,
                available_s=at_s, settle=False,
            )  # fmt: skip
            assert new is not None
            hold_plan.append((new, points))
        postings.debit(target, hold_id, rules.id, kind="merge", plan=hold_plan, short=0,
                       at_s=at_s)  # fmt: skip
        hold_ref = f"{merge_in_ref(request.ref)}:{voucher.code}"
        kernel.store(
            (
                hold_id, kernel.program_id, target.id, hold_ref,
                "merge", at_s, postings.now_s, None, payload, -voucher.cost, target.balance,
                target.tier, None, f"voucher {voucher.code} moved from {source.code}",
                0, 0, 0, at_s, rules.id, None,
            ),
            when,
            when,
        )  # fmt: skip
        moved_vouchers.append((voucher.id, hold_id))
    # Activity: the main transaction carries the first instant's, the others one row each.
    first = activity[0] if activity else Activity(at_s, 0, 0, 0)
    for n, act in enumerate(activity[1:], start=2):
        kernel.store(
            (
                postings.next_txn_id(), kernel.program_id, target.id,
                f"{merge_in_ref(request.ref)}:activity:{n}", "merge", at_s, postings.now_s,
                None, payload, 0, target.balance, target.tier, None,
                f"qualifying activity moved from {source.code}", act.points, act.spend_minor,
                act.visits, act.qual_at, rules.id, None,
            ),
            when,
            when,
        )  # fmt: skip
    _merge_tier(kernel, source, target, rules, day, combined, in_id)
    kernel.store(
        (
            out_id, kernel.program_id, source.id, request.ref, "merge", at_s, postings.now_s,
            None, payload, -before, source.balance, source.tier, None,
            f"merged into {target.code}", 0, 0, 0, at_s, rules.id, None,
        ),
        when,
        when,
    )  # fmt: skip
    kernel.store(
        (
            in_id, kernel.program_id, target.id, merge_in_ref(request.ref), "merge", at_s,
            postings.now_s, None, payload, before + sum(v.cost for v in vouchers),
            target.balance, target.tier, out_id, f"merged from {source.code}",
            first.points, first.spend_minor, first.visits, first.qual_at, rules.id, None,
        ),
        when,
        when,
    )  # fmt: skip
    return Merged(out_id, in_id, before, target.balance, target.tier, moved_vouchers)


def _merge_tier(
    kernel: Kernel,
    source: MemberState,
    target: MemberState,
    rules: VersionRules,
    day: date,
    combined: Decimal,
    txn_id: int,
) -> None:
    index = rules.tier_index
    qualified = qualified_level(rules.spec, combined)
    best = max((target.tier, source.tier, qualified), key=lambda tier: index.get(tier, -1))
    if index.get(best, -1) <= index.get(target.tier, -1):
        return
    # The source's own tier keeps its hold; a tier the combined activity earns starts one.
    since = source.tier_since if best == source.tier and source.tier_since else day
    kernel.postings.tier_change(target, best, day, "merge", txn_id)
    target.tier = best
    target.tier_since = since
    target.changed = True
