"""One batch of an import: its rows applied in memory with the steps of
services.ledger (credit settles a debt first, debits take lots in order), then written at
once; and the importer state that outlives a batch."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlmodel import Session

from loyaltyctl.errors import Conflict, InvalidInput, NotFound
from loyaltyctl.ledger.state import KnownTxn, MemberState, OpenLot
from loyaltyctl.rules.money import from_minor
from loyaltyctl.rules.tiers import qualified_level
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.imports.reading import Layout, SourceRow
from loyaltyctl.services.imports.rejects import Rejected
from loyaltyctl.services.imports.rulebook import TRACKER_LIMIT, RuleBook, Tracker, VersionRules
from loyaltyctl.store.bulk import (
    ENTRY_INSERT,
    LOT_INSERT,
    LOT_REMAINING,
    MEMBER_INSERT,
    TXN_INSERT,
    Bulk,
    fetch_members,
)

# Member rows kept between batches of a one-transaction import.
MEMBER_CACHE_LIMIT = 500_000
# Open lots kept on those member rows for later debits.
LOT_CACHE_LIMIT = 250_000


@dataclass
class BatchResult:
    rows: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    last_line: int = 0


class _Batch:
    """The rows one batch adds, built with the steps of services.ledger: ``credit``
    settles a debt first and puts the rest in a new lot, ``debit`` takes lots in the order
    given and leaves what they cannot cover as a debt."""

    def __init__(self, bulk: Bulk, program_id: int, now: datetime) -> None:
        self.bulk = bulk
        self.program_id = program_id
        self.now_s = bulk.ts(now)
        self.txns: list[tuple[Any, ...]] = []
        self.lots: list[list[Any]] = []
        self.entries: list[tuple[Any, ...]] = []
        self.txn_ids: Iterator[int] = iter(())
        self.lot_ids: Iterator[int] = iter(())
        self.last_txn_id: int | None = None
        # Lots this batch made that members' lot lists hold, and stored lots it took from.
        self.open_lots: list[OpenLot] = []
        self.debited: dict[int, OpenLot] = {}
        self.debtors: dict[int, MemberState] = {}

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
        settle = min(m.debt, points)
        if settle:
            self.entry(m, txn_id, None, kind, settle, at_s, version_id)
        rest = points - settle
        if not rest:
            return
        lot_id = next(self.lot_ids)
        expires_s = self.bulk.day(expires)
        row = [lot_id, m.id, txn_id, lot_kind, at_s, available_s, expires_s, rest, rest]
        self.lots.append(row)
        self.entry(m, txn_id, lot_id, kind, rest, at_s, version_id)
        if m.lots is not None:
            lot = OpenLot(lot_id, txn_id, expires_s, at_s, rest, row)
            m.lots.append(lot)
            self.open_lots.append(lot)

    @staticmethod
    def plan_debit(lots: Iterable[OpenLot], points: int) -> tuple[list[tuple[OpenLot, int]], int]:
        plan: list[tuple[OpenLot, int]] = []
        needed = points
        for lot in lots:
            if needed == 0:
                break
            take = min(lot.remaining, needed)
            if take > 0:
                plan.append((lot, take))
                needed -= take
        return plan, needed

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

    def write(self, members: Iterable[MemberState]) -> None:
        """Store the batch: new members, transactions, lots, entries, then the caches."""
        bulk = self.bulk
        new_members: list[tuple[Any, ...]] = []
        member_updates: list[tuple[Any, ...]] = []
        lot_updates = [
            (lot.remaining, lot.id) for lot in self.debited.values() if lot.remaining != lot.initial
        ]
        for m in members:
            last = bulk.ts(m.last_purchase_at) if m.last_purchase_at else None
            if m.new:
                new_members.append(
                    (
                        m.id,
                        self.program_id,
                        m.code,
                        m.name,
                        m.email,
                        m.phone,
                        bulk.day(m.birthday),
                        "active",
                        m.tier,
                        bulk.day(m.tier_since),
                        bulk.ts(m.enrolled_at),
                        m.balance,
                        m.debt,
                        last,
                        self.now_s,
                    )
                )
            elif m.changed:
                member_updates.append(
                    (m.balance, m.debt, m.tier, bulk.day(m.tier_since), last, m.id)
                )
        bulk.insert("member", MEMBER_INSERT, new_members)
        bulk.insert("txn", TXN_INSERT, self.txns)
        bulk.insert("points_lot", LOT_INSERT, self.lots)
        bulk.insert("points_entry", ENTRY_INSERT, self.entries)
        bulk.update("points_lot", ("remaining",), lot_updates)
        bulk.update(
            "member", ("balance", "debt", "tier", "tier_since", "last_purchase_at"), member_updates
        )


class Importer:
    """State that outlives one batch: the program's rules and the qualifying activity of
    members already seen."""

    layout: Layout

    def __init__(self, ctx: ProgramContext, *, now: datetime, keeps_locks: bool) -> None:
        """``keeps_locks``: every batch runs in one transaction, so the members locked in
        an earlier batch cannot have changed since."""
        self.ctx = ctx
        self.now = now
        self.book = RuleBook(ctx)
        self.tracker = Tracker(self.book.views)
        self.keeps_locks = keeps_locks
        self._mark: int | None = None
        self.members: dict[str, MemberState] = {}
        self.touched: dict[str, MemberState] = {}
        # Members whose open lots are kept between batches of one transaction.
        self._kept: dict[int, MemberState] = {}
        self.known: dict[str, KnownTxn] = {}
        # Transactions this batch stored: their insert row, time and qualifying time.
        self.applied: dict[str, tuple[tuple[Any, ...], datetime, datetime]] = {}
        self.batch: _Batch

    def apply(self, session: Session, rows: list[SourceRow]) -> BatchResult:
        raise NotImplementedError

    def _start(self, session: Session) -> Bulk:
        bulk = Bulk(session)
        bulk.lock_imports(self.ctx.id)
        return bulk

    def _new_batch(self, bulk: Bulk, txns: int, lots: int) -> _Batch:
        """Reserve ids for at most ``txns`` transactions and ``lots`` lots.

        Called once this batch's members are locked. Between batches committed one by one,
        another writer may have added transactions, and then the qualifying activity the
        tracker remembers may be stale: it is dropped when anyone but this import took a
        transaction id since the last batch (every writer locks the member first, so by now
        a writer of one of these members has committed)."""
        batch = _Batch(bulk, self.ctx.id, self.now)
        batch.txn_ids, self._mark, stale = bulk.txn_ids(txns, self._mark)
        if stale and not self.keeps_locks:
            self.tracker.clear()
        batch.lot_ids = bulk.ids("points_lot", lots)
        return batch

    def _fetch_members(self, session: Session, codes: set[str]) -> None:
        """The batch's members (``touched``). In one transaction the rows read in an
        earlier batch are still what the database holds (only this import writes them),
        so they are kept rather than read again."""
        if not self.keeps_locks:
            self.members = fetch_members(session, self.ctx.id, codes)
        else:
            if len(self.members) > MEMBER_CACHE_LIMIT:
                self.members = {}
                self._kept.clear()
            missing = [code for code in codes if code not in self.members]
            if missing:
                self.members.update(fetch_members(session, self.ctx.id, missing))
        self.touched = {code: m for code in codes if (m := self.members.get(code)) is not None}

    def _finish(self, bulk: Bulk, batch: _Batch) -> None:
        batch.write(self.touched.values())
        for m in self.touched.values():
            m.changed = m.new = False
        self._keep_lots(batch)
        if self._mark is not None:
            self._mark = bulk.mark_after(self._mark, batch.last_txn_id)
        if self.tracker.size > TRACKER_LIMIT:
            self.tracker.clear()

    def _keep_lots(self, batch: _Batch) -> None:
        """After a batch is written: in one transaction the lots loaded on member rows stay
        what the database holds (this import adds each new lot of those members to them),
        so later batches take from them instead of reading them again. Between
        transactions another writer may have changed them: they are read again."""
        if not self.keeps_locks:
            for m in self.touched.values():
                m.lots = None
            return
        for lot in itertools.chain(batch.open_lots, batch.debited.values()):
            lot.row = None  # stored now, with this remainder
            lot.initial = lot.remaining
        for m in batch.debtors.values():
            if m.lots is not None:
                m.lots = [lot for lot in m.lots if lot.remaining > 0]
        for m in self.touched.values():
            if m.lots is not None:
                self._kept[m.id] = m
        if sum(len(m.lots or ()) for m in self._kept.values()) > LOT_CACHE_LIMIT:
            for m in self._kept.values():
                m.lots = None
            self._kept.clear()

    def _store(self, txn: tuple[Any, ...], when: datetime, qual_at: datetime) -> None:
        """Queue a transaction row (in TXN_INSERT's order) and remember it by reference
        for the rest of the batch."""
        self.batch.txns.append(txn)
        self.applied[txn[3]] = (txn, when, qual_at)

    def _found(self, ref: str) -> KnownTxn | None:
        """The transaction stored under ``ref``: before this batch or earlier in it."""
        found = self.known.get(ref)
        if found is None and (applied := self.applied.get(ref)) is not None:
            t, when, qual_at = applied
            found = KnownTxn(t[0], t[4], t[2], when, t[7], t[9], t[14], t[15], qual_at, t[8])
        return found

    def _not_found(self, code: str) -> NotFound:
        return NotFound(
            f"member {code} not found in program {self.ctx.key}",
            hint=f"enroll it with: loyaltyctl member enroll {code}",
        )

    def _conflict(self, ref: str, kind: str) -> Conflict:
        return Conflict(
            f"reference {ref} was already used for a different {kind} in program {self.ctx.key}",
            hint="use a new ref for a new transaction; an identical retry is safe",
        )

    def _upgrade(self, m: MemberState, rules: VersionRules, day: date) -> None:
        """services.tiering.upgrade_if_qualified on the tracker's activity."""
        index = rules.tier_index.get(m.tier, 0)
        if index >= rules.top:
            return
        lo, hi = rules.window(day)
        total = self.tracker.activity(m.id, rules.view, lo, hi)
        if total < rules.next_min[index]:
            return
        activity = from_minor(total, rules.digits) if rules.metric == "spend" else Decimal(total)
        target = qualified_level(rules.spec, activity)
        if rules.tier_index[target] > index:
            m.tier = target
            m.tier_since = day
            m.changed = True
            if rules.tier_index[target] == rules.top and len(self.book.versions) == 1:
                self.tracker.drop(m.id)  # nowhere higher to go


def checked_text(value: str, what: str, limit: int | None = None) -> str:
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    if limit is not None and len(value) > limit:
        raise InvalidInput(f"{what} is longer than {limit} characters")
    return value


def canonical(payload: dict[str, Any]) -> str:
    # services.txns._canonical
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))
