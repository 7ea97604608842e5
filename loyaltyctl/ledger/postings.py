"""The rows a batch of requests adds to the ledger, built in memory.

``credit`` settles a debt first and puts the rest in a new lot; ``debit`` takes lots in
the order given and leaves what they cannot cover as a debt; ``plan_debit`` decides which
lots a debit takes. These are the only credit, debit and settle steps of the ledger:
every write (single commands, imports, redemptions, cancellations) is decided by them.

Rows are tuples in the column order below, ready for the store's bulk writer. Times and
dates are formatted by the functions the store gives (``ts``, ``day``): text on SQLite,
values on PostgreSQL, so nothing is converted twice."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from typing import Any

from loyaltyctl.ledger.state import MemberState, OpenLot

TXN_COLUMNS = (
    "id",
    "program_id",
    "member_id",
    "ref",
    "kind",
    "occurred_at",
    "recorded_at",
    "amount_minor",
    "payload",
    "points",
    "balance_after",
    "tier_after",
    "original_id",
    "reason",
    "qual_points",
    "qual_spend_minor",
    "qual_visits",
    "qual_at",
    "program_version_id",
    "store",
)
LOT_COLUMNS = (
    "id",
    "member_id",
    "txn_id",
    "kind",
    "earned_at",
    "available_at",
    "expires_on",
    "points",
    "remaining",
)
LOT_REMAINING = LOT_COLUMNS.index("remaining")
ENTRY_COLUMNS = (
    "member_id",
    "txn_id",
    "lot_id",
    "kind",
    "points",
    "at",
    "recorded_at",
    "program_version_id",
)
VOUCHER_COLUMNS = (
    "program_id",
    "member_id",
    "txn_id",
    "code",
    "reward_key",
    "reward_name",
    "reward_kind",
    "reward_value",
    "reward_product",
    "points",
    "status",
    "issued_at",
    "expires_at",
)
TIER_CHANGE_COLUMNS = ("member_id", "tier", "effective_on", "reason", "recorded_at", "txn_id")


def split_credit(debt: int, points: int) -> tuple[int, int]:
    """New points pay a debt first: (what settles the debt, what goes into a lot)."""
    settle = min(debt, points)
    return settle, points - settle


def split_refund(taken: Iterable[tuple[Any, int]], debt: int) -> tuple[int, list[tuple[Any, int]]]:
    """Points given back (a cancelled voucher) settle a debt first, as new points do,
    taken from the first of ``taken`` (lot, points); the rest goes back to its lots."""
    taken = list(taken)
    settle = min(debt, sum(points for _, points in taken))
    left = settle
    back: list[tuple[Any, int]] = []
    for lot, points in taken:
        used = min(points, left)
        left -= used
        if points - used > 0:
            back.append((lot, points - used))
    return settle, back


def plan_debit(lots: Iterable[Any], points: int) -> tuple[list[tuple[Any, int]], int]:
    """Take ``points`` from lots (anything with ``remaining``) in the order given:
    the (lot, points) taken, and what they could not cover."""
    plan: list[tuple[Any, int]] = []
    needed = points
    for lot in lots:
        if needed == 0:
            break
        take = min(lot.remaining, needed)
        if take > 0:
            plan.append((lot, take))
            needed -= take
    return plan, needed


class Postings:
    """The rows one batch adds, and the members' states it changes as it goes."""

    def __init__(
        self,
        program_id: int,
        now: datetime,
        *,
        ts: Callable[[datetime], Any],
        day: Callable[[date | None], Any],
        ts_iso: Callable[[datetime], tuple[Any, str]],
        txn_ids: Iterator[int],
        lot_ids: Iterator[int],
        digits: int = 2,
    ) -> None:
        self.program_id = program_id
        # The currency's decimals, for the amounts of the batch's events.
        self.digits = digits
        self.ts = ts
        self.day = day
        self.ts_iso = ts_iso
        self.now_s = ts(now)
        self.txns: list[tuple[Any, ...]] = []
        self.lots: list[list[Any]] = []
        self.entries: list[tuple[Any, ...]] = []
        self.txn_ids = txn_ids
        self.lot_ids = lot_ids
        self.last_txn_id: int | None = None
        # Lots this batch made that members' lot lists hold, and stored lots it took from.
        self.open_lots: list[OpenLot] = []
        self.debited: dict[int, OpenLot] = {}
        self.debtors: dict[int, MemberState] = {}
        self.tier_changes: list[tuple[Any, ...]] = []
        self.vouchers: list[tuple[Any, ...]] = []
        # (status, cancelled_at, cancel_txn_id, voucher id) of vouchers cancelled.
        self.voucher_updates: list[tuple[Any, ...]] = []

    def next_txn_id(self) -> int:
        self.last_txn_id = next(self.txn_ids)
        return self.last_txn_id

    def entry(
        self,
        m: MemberState,
        txn_id: int,
        lot_id: int | None,
        kind: str,
        points: int,
        at_s: Any,
        version_id: int,
    ) -> None:
        self.entries.append((m.id, txn_id, lot_id, kind, points, at_s, self.now_s, version_id))
        m.balance += points
        if lot_id is None:
            m.debt -= points
        m.changed = True

    def credit(
        self,
        m: MemberState,
        txn_id: int,
        version_id: int,
        kind: str,
        lot_kind: str,
        points: int,
        at_s: Any,
        available_s: Any,
        expires: date | None,
    ) -> None:
        """Arguments by position: this runs for nearly every row."""
        settle, rest = split_credit(m.debt, points)
        if settle:
            self.entry(m, txn_id, None, kind, settle, at_s, version_id)
        if not rest:
            return
        lot_id = next(self.lot_ids)
        expires_s = self.day(expires)
        row = [lot_id, m.id, txn_id, lot_kind, at_s, available_s, expires_s, rest, rest]
        self.lots.append(row)
        self.entry(m, txn_id, lot_id, kind, rest, at_s, version_id)
        if m.lots is not None:
            lot = OpenLot(lot_id, txn_id, expires_s, at_s, rest, row)
            m.lots.append(lot)
            self.open_lots.append(lot)

    def move_in(
        self,
        m: MemberState,
        txn_id: int,
        version_id: int,
        kind: str,
        lot: OpenLot,
        points: int,
        at_s: Any,
        *,
        available_s: Any,
        settle: bool,
    ) -> OpenLot | None:
        """Points taken from another member's ``lot`` (a transfer, a merge) into a new lot
        of ``m`` with the same expiry date and earning time, so they expire when they
        would have and debits take them in the same order. With ``settle`` a debt of
        ``m`` is paid first, as by any new points. Returns the new lot, if any."""
        if settle:
            settled, points = split_credit(m.debt, points)
            if settled:
                self.entry(m, txn_id, None, kind, settled, at_s, version_id)
        if not points:
            return None
        expires_s, earned_s = lot.stored_dates()
        lot_id = next(self.lot_ids)
        row = [lot_id, m.id, txn_id, kind, earned_s, available_s, expires_s, points, points]
        self.lots.append(row)
        self.entry(m, txn_id, lot_id, kind, points, at_s, version_id)
        new = OpenLot(lot_id, txn_id, expires_s, earned_s, points, row)
        if m.lots is not None:
            m.lots.append(new)
            self.open_lots.append(new)
        return new

    def debit(
        self,
        m: MemberState,
        txn_id: int,
        version_id: int,
        *,
        kind: str,
        plan: list[tuple[OpenLot, int]],
        short: int,
        at_s: Any,
    ) -> None:
        self.debtors[m.id] = m
        for lot, take in plan:
            lot.remaining -= take
            if lot.row is not None:
                lot.row[LOT_REMAINING] = lot.remaining
            else:
                self.debited[lot.id] = lot
            self.entry(m, txn_id, lot.id, kind, -take, at_s, version_id)
        if short:
            self.entry(m, txn_id, None, kind, -short, at_s, version_id)

    def refund(
        self,
        m: MemberState,
        txn_id: int,
        version_id: int,
        back: list[tuple[OpenLot, int]],
        settle: int,
        at_s: Any,
    ) -> None:
        """Points back into the stored lots they were taken from (they keep their dates),
        after ``settle`` points paid a debt."""  # fmt: skip
        if settle:
            self.entry(m, txn_id, None, "refund", settle, at_s, version_id)
        for lot, points in back:
            lot.remaining += points
            self.debited[lot.id] = lot
            self.entry(m, txn_id, lot.id, "refund", points, at_s, version_id)

    def tier_change(
        self, m: MemberState, tier: str, effective: date, reason: str, txn_id: int | None
    ) -> None:
        """A step of the member's tier history (the member's tier is the caller's)."""
        self.tier_changes.append((m.id, tier, self.day(effective), reason, self.now_s, txn_id))

    def lot_updates(self) -> list[tuple[int, int]]:
        """(remaining, id) of the stored lots this batch took from."""
        return [
            (lot.remaining, lot.id) for lot in self.debited.values() if lot.remaining != lot.initial
        ]
