"""One batch of rows, from loading the state they touch to writing their postings, and
the importer state that outlives a batch.

The rows themselves are applied by the posting core (``ledger.kernel``), the same code
that applies a single command: this module loads what the kernel needs with a handful of
set queries, hands it the rows in order, and writes what it collected with the store's
bulk writer, all inside the transaction it is given."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from loyaltyctl.errors import LoyaltyError
from loyaltyctl.ledger.kernel import Kernel
from loyaltyctl.ledger.postings import Postings
from loyaltyctl.ledger.rulebook import TRACKER_LIMIT, RuleBook, Tracker
from loyaltyctl.ledger.state import MemberState
from loyaltyctl.rules.versions import ProgramContext
from loyaltyctl.services.imports.reading import Layout, SourceRow
from loyaltyctl.services.imports.rejects import Rejected, reason_of
from loyaltyctl.store.bulk import Bulk, write_member_caches, write_postings
from loyaltyctl.store.lookups import fetch_activity, fetch_members, load_all_lots

# Member rows kept between batches of a one-transaction import.
MEMBER_CACHE_LIMIT = 500_000
# Open lots kept on those member rows for later debits.
LOT_CACHE_LIMIT = 50_000


@dataclass
class BatchResult:
    rows: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    last_line: int = 0


class Importer:
    """State that outlives one batch: the program's rules, the qualifying activity of
    members already seen, and (in one transaction) the members and lots already read."""

    layout: Layout

    def __init__(
        self, ctx: ProgramContext, *, now: datetime, keeps_locks: bool, lock: bool = True
    ) -> None:
        """``keeps_locks``: every batch runs in one transaction, so the members locked in
        an earlier batch cannot have changed since. ``lock``: imports of one program take
        turns (a single command locks only its member)."""
        self.ctx = ctx
        self.now = now
        self.book = RuleBook(ctx)
        self.tracker = Tracker(self.book.views)
        self.keeps_locks = keeps_locks
        self.lock = lock
        self._mark: int | None = None
        self.kernel = Kernel(ctx.id, ctx.key, self.book, self.tracker, now)
        # Members whose open lots are kept between batches of one transaction.
        self._kept: dict[int, MemberState] = {}
        # Members whose cached balances changed since written (one transaction only).
        self._held: dict[int, MemberState] = {}

    def apply(self, session: Session, rows: list[SourceRow]) -> BatchResult:
        """Parse and apply one batch of rows in file order, in the session's transaction:
        a bad row is set aside with its reason, the rest is written."""
        result = BatchResult(rows=len(rows), last_line=rows[-1].line if rows else 0)
        parsed: list[Any] = []
        for src in rows:
            try:
                parsed.append(self.parse(src))
            except LoyaltyError as exc:
                result.rejected.append(Rejected(src, reason_of(exc)))
        apply_row = self.apply_row
        for row in self.prepare(session, parsed):
            try:
                if apply_row(row):
                    result.applied += 1
                else:
                    result.duplicates += 1
            except LoyaltyError as exc:
                result.rejected.append(Rejected(row.src, reason_of(exc)))
        result.rejected.sort(key=lambda item: item.row.line)
        self._finish(self._bulk, self._postings)
        return result

    def parse(self, src: SourceRow) -> Any:
        raise NotImplementedError

    def prepare(self, session: Session, parsed: list[Any]) -> list[Any]:
        """Load what the kernel needs for ``parsed`` and reserve ids (``_start`` and
        ``_new_batch``); returns the rows to apply, in order."""
        raise NotImplementedError

    def apply_row(self, row: Any) -> bool:
        raise NotImplementedError

    def finish(self) -> None:
        """Write what the kernel collected for the rows of ``prepare``."""
        self._finish(self._bulk, self._postings)

    def _start(self, session: Session) -> Bulk:
        bulk = Bulk(session)
        if self.lock:
            bulk.lock_imports(self.ctx.id)
        self.kernel.more_lots = lambda m: load_all_lots(session, m)
        self.kernel.applied = {}
        return bulk

    def _new_batch(self, bulk: Bulk, txns: int, lots: int) -> Postings:
        """Reserve ids for at most ``txns`` transactions and ``lots`` lots.

        Called once this batch's members are locked. Between batches committed one by one,
        another writer may have added transactions, and then the qualifying activity the
        tracker remembers may be stale: it is dropped when anyone but this import took a
        transaction id since the last batch (every writer locks the member first, so by now
        a writer of one of these members has committed)."""
        txn_ids, self._mark, stale = bulk.txn_ids(txns, self._mark)
        if stale and not self.keeps_locks:
            self.tracker.clear()
        postings = Postings(
            self.ctx.id,
            self.now,
            ts=bulk.ts,
            day=bulk.day,
            ts_iso=bulk.ts_iso,
            txn_ids=txn_ids,
            lot_ids=bulk.ids("points_lot", lots),
            digits=self.book.digits,
        )
        self.kernel.postings = postings
        self._bulk, self._postings = bulk, postings
        return postings

    def _fetch_members(self, session: Session, codes: set[str]) -> None:
        """The batch's members (``touched``). In one transaction the rows read in an
        earlier batch are still what the database holds (only this import writes them),
        so they are kept rather than read again."""
        k = self.kernel
        if not self.keeps_locks:
            k.members = fetch_members(session, self.ctx.id, codes)
        else:
            if len(k.members) > MEMBER_CACHE_LIMIT:
                self.write_held(session)
                k.members = {}
                self._kept.clear()
            missing = [code for code in codes if code not in k.members]
            if missing:
                k.members.update(fetch_members(session, self.ctx.id, missing))
        k.touched = {code: m for code in codes if (m := k.members.get(code)) is not None}

    def _load_activity(self, session: Session, needs: dict[int, int]) -> None:
        """Qualifying activity of each member from day ``needs[id]`` (an ordinal) on."""
        ids, since = self.tracker.missing(needs)
        if since is not None:
            for member_id, qual_at, points, spend, visits in fetch_activity(session, ids, since):
                self.tracker.add(member_id, qual_at, points, spend, visits)

    def write_held(self, session: Session) -> None:
        """Write the member caches held back by the batches of one transaction: call it
        after the last batch, in that transaction."""
        if self._held:
            write_member_caches(Bulk(session), self._held.values())
            self._held.clear()

    def _finish(self, bulk: Bulk, postings: Postings) -> None:
        touched = self.kernel.touched
        write_postings(bulk, postings, touched.values(), self._held if self.keeps_locks else None)
        for m in touched.values():
            m.changed = m.new = False
        self._keep_lots(postings)
        if self._mark is not None:
            self._mark = bulk.mark_after(self._mark, postings.last_txn_id)
        if self.tracker.size > TRACKER_LIMIT:
            self.tracker.clear()

    def _keep_lots(self, postings: Postings) -> None:
        """After a batch is written: in one transaction the lots loaded on member rows stay
        what the database holds (this import adds each new lot of those members to them),
        so later batches take from them instead of reading them again. Between
        transactions another writer may have changed them: they are read again."""
        touched = self.kernel.touched
        if not self.keeps_locks:
            for m in touched.values():
                m.lots = None
            return
        for lot in itertools.chain(postings.open_lots, postings.debited.values()):
            lot.row = None  # stored now, with this remainder
            lot.initial = lot.remaining
        for m in postings.debtors.values():
            if m.lots is not None:
                m.lots = [lot for lot in m.lots if lot.remaining > 0]
        kept = self._kept
        for m in touched.values():
            if m.lots is not None:
                kept.pop(m.id, None)  # the most recently used last
                kept[m.id] = m
        lots = sum(len(m.lots or ()) for m in kept.values())
        if lots > LOT_CACHE_LIMIT:
            # The members whose lots were used longest ago go first, down to half the
            # ceiling: regulars keep theirs.
            for member_id in list(kept):
                if lots <= LOT_CACHE_LIMIT // 2:
                    break
                m = kept.pop(member_id)
                lots -= len(m.lots or ())
                m.lots = None
