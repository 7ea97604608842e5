"""Transfers between members in the posting core.

A transfer takes available points (not pending ones) from the source's lots,
oldest-expiring first, and gives the target a lot for each lot it took from, with the
same expiry date and earning time: points moved expire when they would have. The points
the target receives pay a debt of its first, as any new points do. Transfers are not
qualifying activity. Pure like ``kernel``: the driver loads both members (locked in code
order) and the source's spendable lots; this decides and collects the postings.

Two transactions record it, so that each transaction's points are the sum of its
entries and each entry's lot belongs to its member: the source's (the reference given,
points negative) and the target's (``transfer_in_ref``, points positive, its
``original_id`` the source's)."""

from __future__ import annotations

from dataclasses import dataclass

from loyaltyctl.errors import NotAllowed
from loyaltyctl.ledger.kernel import Kernel
from loyaltyctl.ledger.postings import plan_debit
from loyaltyctl.ledger.requests import Transfer, canonical
from loyaltyctl.ledger.rulebook import VersionRules
from loyaltyctl.ledger.state import MemberState
from loyaltyctl.rules.rewards import refuse_inactive


def transfer_in_ref(ref: str) -> str:
    return f"transfer-in:{ref}"


@dataclass(frozen=True)
class Transferred:
    txn_id: int
    in_txn_id: int
    points: int
    balance: int
    target_balance: int


def refuse_same(source: MemberState, target: MemberState, what: str) -> None:
    if source.id == target.id:
        raise NotAllowed(
            f"cannot {what} member {source.code} into itself",
            hint="give two different members",
        )


def transfer(
    kernel: Kernel,
    source: MemberState,
    target: MemberState,
    rules: VersionRules,
    request: Transfer,
    *,
    pending: int,
) -> Transferred:
    """Move ``request.points`` from ``source.lots`` (its lots spendable now, in the order
    debits take them) to ``target``."""
    refuse_same(source, target, "transfer points from")
    refuse_inactive(source, "transfer points")
    refuse_inactive(target, "receive points")
    assert source.lots is not None
    available = sum(lot.remaining for lot in source.lots) - source.debt
    if request.points > available:
        held = f" ({pending} more are pending)" if pending else ""
        raise NotAllowed(
            f"member {source.code} has {max(available, 0)} available points{held}, "
            f"not the {request.points} to transfer",
            hint=f"see them with: loyaltyctl member show {source.code}",
        )
    # A debt comes off the available points (above); the lots themselves cover the rest.
    plan, short = plan_debit(source.lots, request.points)
    assert not short
    postings = kernel.postings
    when = request.when
    at_s, at_iso = postings.ts_iso(when)
    out_id = postings.next_txn_id()
    in_id = postings.next_txn_id()
    postings.debit(source, out_id, rules.id, kind="transfer", plan=plan, short=0, at_s=at_s)
    for lot, take in plan:
        postings.move_in(
            target, in_id, rules.id, "transfer", lot, take, at_s, available_s=at_s, settle=True
        )
    why = f": {request.reason}" if request.reason else ""
    payload = canonical({**request.payload(), "at": at_iso})
    points = request.points
    kernel.store(
        (
            out_id, kernel.program_id, source.id, request.ref, "transfer", at_s, postings.now_s,
            None, payload, -points, source.balance, source.tier, None,
            f"transfer to {target.code}{why}", 0, 0, 0, at_s, rules.id, None,
        ),
        when,
        when,
    )  # fmt: skip
    kernel.store(
        (
            in_id, kernel.program_id, target.id, transfer_in_ref(request.ref), "transfer", at_s,
            postings.now_s, None, payload, points, target.balance, target.tier, out_id,
            f"transfer from {source.code}{why}", 0, 0, 0, at_s, rules.id, None,
        ),
        when,
        when,
    )  # fmt: skip
    return Transferred(out_id, in_id, -points, source.balance, target.balance)
