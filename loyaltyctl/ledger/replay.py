"""A ledger in memory: history replayed through the posting core, never written.

The simulator (``services/simulate.py``) reads a program's recorded history and hands it
here event by event, in the order it happened. Each event goes through the same code that
wrote the real ledger: the ``Kernel`` for enrolments, opening balances, purchases,
returns and adjustments, ``vouchers`` for redemptions and cancellations, and
``nightly`` for the expiry runs and tier reviews. The ``Postings`` it collects hold
Python values (times and dates as they are) and ids of its own, and are drained after
every event into running totals, so memory grows with the members and their open lots,
not with the transactions.

Pure: no database, no I/O, no clock.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from loyaltyctl.errors import LoyaltyError
from loyaltyctl.ledger import vouchers
from loyaltyctl.ledger.kernel import Kernel
from loyaltyctl.ledger.nightly import Qualifying, due_lots, expiry_moment, review_tiers
from loyaltyctl.ledger.postings import LOT_REMAINING, Postings
from loyaltyctl.ledger.requests import MemberRow, TxnRow
from loyaltyctl.ledger.rulebook import RuleBook, Tracker
from loyaltyctl.ledger.state import LOT_KEY, KnownTxn, MemberState, OpenLot
from loyaltyctl.rules.program import Reward
from loyaltyctl.rules.timeutil import end_of_local_day, local_midnight
from loyaltyctl.rules.versions import ProgramContext

_AVAILABLE = 5  # LOT_COLUMNS.index("available_at")


class KeepAll(Tracker):
    """A tracker that keeps every member: the tier review reads the activity of members
    at the top tier too (the importer's tracker forgets them, having nowhere higher to
    take them)."""

    def drop(self, member_id: int) -> None:
        return None


def _ts(moment: datetime) -> datetime:
    return moment


def _day(day: date | None) -> date | None:
    return day


def _ts_iso(moment: datetime) -> tuple[datetime, str]:
    return moment, moment.isoformat()


def _available(lot: OpenLot, when: datetime) -> bool:
    """Every lot of the replay was made by it, so it has its row (available_at)."""
    assert lot.row is not None
    available: datetime = lot.row[_AVAILABLE]
    return available <= when


def _spendable(lot: OpenLot, when: datetime) -> bool:
    return lot.remaining > 0 and _available(lot, when)


def _no_more_lots(m: MemberState) -> None:
    m.lots_complete = True


@dataclass
class SimVoucher:
    """What the voucher rules read of a voucher issued in the replay."""

    code: str
    status: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None


@dataclass
class _Issued:
    voucher: SimVoucher
    txn_id: int
    points: int
    taken: list[tuple[OpenLot, int]]


class Replay:
    """Members' states, their qualifying activity and the totals of the entries made so
    far. ``keep_purchases`` and ``keep_redemptions`` are the (recorded) ids of the
    purchases later returned and the redemptions later cancelled: only those are
    remembered beyond their own event."""

    def __init__(
        self,
        ctx: ProgramContext,
        now: datetime,
        *,
        keep_purchases: set[int],
        keep_redemptions: set[int],
    ) -> None:
        self.book = RuleBook(ctx)
        views = self.book.views
        self.tracker = KeepAll(views)
        self.qualifying = Qualifying(self.tracker, KeepAll(views), KeepAll(views))
        self.kernel = Kernel(ctx.id, ctx.key, self.book, self.tracker, now)
        self.postings = Postings(
            ctx.id,
            now,
            ts=_ts,
            day=_day,
            ts_iso=_ts_iso,
            txn_ids=itertools.count(1),
            lot_ids=itertools.count(1),
        )
        self.kernel.postings = self.postings
        self.kernel.more_lots = _no_more_lots
        self.run_ids = itertools.count(1)
        self.keep_purchases = keep_purchases
        self.keep_redemptions = keep_redemptions
        self._originals: dict[int, KnownTxn] = {}
        self._issued: dict[int, _Issued] = {}
        self._refused_ids: set[int] = set()
        # Entry kind → (points in, points out), as the summary report sums them.
        self.sums: dict[str, list[int]] = {}
        self.redemptions_refused = 0
        self.cancellations_skipped = 0
        self.refused: Counter[str] = Counter()

    @property
    def members(self) -> dict[str, MemberState]:
        return self.kernel.members

    # ---- events --------------------------------------------------------------------------

    def enrol(self, member_id: int, code: str, at: datetime) -> None:
        """An enrolment with the signup bonus of the rules in force then."""
        for tracker in (self.tracker, self.qualifying.backing, self.qualifying.returns):
            tracker.fresh(member_id)
        self.kernel.member_ids = iter((member_id,))
        m = self.kernel.enroll(MemberRow(None, code, {}, at, 0, None))
        # Made before the member had a lot list: the signup bonus (every other event
        # drains its postings, so these rows are this enrolment's).
        m.lots = [OpenLot(r[0], r[2], r[6], r[4], r[LOT_REMAINING], r) for r in self.postings.lots]
        m.lots_complete = True
        self._drain()

    def opening(self, code: str, points: int, expires: date | None) -> None:
        m = self.kernel.members[code]
        self._guard(
            "adjust",
            lambda: self.kernel.opening(m, MemberRow(None, code, {}, None, points, expires)),
        )
        self._drain()

    def txn(self, row: TxnRow, recorded_id: int) -> None:
        """A purchase, return or adjustment; one the rules refuse is counted by kind."""
        if not self._guard(row.kind, lambda: self.kernel.apply_txn(row)):
            return
        if recorded_id in self.keep_purchases:
            t = self.kernel.applied[row.ref][0]
            known = KnownTxn(t[0], t[4], t[2], row.when, t[7], t[9], t[14], t[15], row.when, t[8])
            self.kernel.known[row.ref] = known
            self._originals[t[0]] = known
        self._drain()

    def redeem(
        self, code: str, reward: Reward, *, ref: str, when: datetime, voucher: str, recorded_id: int
    ) -> None:
        """A redemption paid from the lots spendable then; refused (and counted) when the
        simulated member cannot have it."""
        m = self.kernel.members[code]
        assert m.lots is not None
        lots = m.lots
        spendable = sorted((lot for lot in lots if _spendable(lot, when)), key=LOT_KEY)
        pending = sum(lot.remaining for lot in lots if not _available(lot, when))
        rules = self.book.at(when)
        m.lots = spendable
        try:
            issued = vouchers.redeem(
                self.kernel, m, rules, reward, ref=ref, when=when, code=voucher,
                limits=vouchers.Limits(stock_left=None, live=0, pending=pending),
            )  # fmt: skip
        except LoyaltyError:
            self.redemptions_refused += 1
            self._refused_ids.add(recorded_id)
            self._drain()
            return
        finally:
            m.lots = lots
        if recorded_id in self.keep_redemptions:
            by_id = {lot.id: lot for lot in spendable}
            taken = [
                (by_id[e[2]], -e[4])
                for e in self.postings.entries
                if e[1] == issued.txn_id and e[2] is not None
            ]
            self._issued[recorded_id] = _Issued(
                SimVoucher(voucher, "issued", when, issued.expires_at),
                issued.txn_id,
                reward.cost,
                taken,
            )
        self._drain()

    def refuse(self, recorded_id: int) -> None:
        """A redemption the replay cannot make at all (its reward is unknown)."""
        self.redemptions_refused += 1
        self._refused_ids.add(recorded_id)

    def cancel(self, code: str, redemption_id: int, when: datetime) -> None:
        """A voucher cancelled: its points back into the lots they came from. Skipped and
        counted when its redemption was refused."""
        issued = self._issued.pop(redemption_id, None)
        if issued is None:
            self.cancellations_skipped += 1
            return
        m = self.kernel.members[code]
        assert m.lots is not None
        lots = m.lots
        try:
            refund = vouchers.cancel(
                self.kernel, m, self.book.at(when), issued.voucher, voucher_id=0,
                redeem_txn_id=issued.txn_id, points=issued.points, taken=issued.taken, when=when,
            )  # fmt: skip
        except LoyaltyError:
            self.refused["refund"] += 1
            self._drain()
            return
        for lot, _ in refund.back:
            if lot not in lots:  # taken to nothing and dropped since: open again
                lots.append(lot)
        self._drain()

    def expire(self, as_of: date) -> None:
        """``jobs.run_expire`` as of ``as_of`` on the members in memory."""
        tz = self.book.tz
        rules = self.book.at(end_of_local_day(as_of, tz))
        start = local_midnight(as_of, tz)
        run_id = next(self.run_ids)
        postings = self.postings
        for m, lot in due_lots(self.kernel.members.values(), rules.spec, as_of):
            points = lot.remaining
            lot.remaining = 0
            if lot.row is not None:
                lot.row[LOT_REMAINING] = 0
            postings.entry(
                m, run_id, lot.id, "expire", -points, expiry_moment(lot, start), rules.id
            )
            postings.debtors[m.id] = m
        self._drain()

    def review(self, as_of: date) -> None:
        """``tier_review.review_tiers`` as of ``as_of`` on the members in memory."""
        rules = self.book.at(end_of_local_day(as_of, self.book.tz))
        for move in review_tiers(self.kernel.members.values(), rules, as_of, self.qualifying):
            self.postings.tier_change(move.member, move.after, as_of, "review", None)
        self._drain()

    # ---- figures -----------------------------------------------------------------------

    def balances(self) -> tuple[int, int]:
        """Points held by members with a positive balance, and owed by those below zero."""
        held = owed = 0
        for m in self.kernel.members.values():
            if m.balance > 0:
                held += m.balance
            else:
                owed -= m.balance
        return held, owed

    def entry_sums(self) -> dict[str, tuple[int, int]]:
        return {kind: (plus, minus) for kind, (plus, minus) in self.sums.items()}

    # ---- internals -----------------------------------------------------------------------

    def _guard(self, kind: str, work: Any) -> bool:
        """Run one request; a refusal of the rules in force is counted, not raised."""
        try:
            work()
        except LoyaltyError:
            self.refused[kind] += 1
            self._drain()
            return False
        return True

    def _drain(self) -> None:
        """Fold the event's postings into the totals and the review's activity, then
        forget them."""
        p = self.postings
        sums = self.sums
        for e in p.entries:
            points = e[4]
            pair = sums.get(e[3])
            if pair is None:
                pair = sums[e[3]] = [0, 0]
            if points > 0:
                pair[0] += points
            else:
                pair[1] -= points
        q = self.qualifying
        for t in p.txns:
            member_id, kind, qual_at = t[2], t[4], t[17]
            if kind == "return":
                q.returns.add(member_id, qual_at, 1, 1, 1)
                original = self._originals.get(t[12])
                if t[16] < 0 and original is not None:
                    # Returned in full: that purchase no longer backs a tier.
                    q.backing.add(
                        member_id,
                        original.qual_at,
                        -original.qual_points,
                        -original.qual_spend_minor,
                        -1,
                    )
            elif t[14] or t[15] or t[16]:
                q.backing.add(member_id, qual_at, t[14], t[15], t[16])
        for m in p.debtors.values():
            if m.lots:
                m.lots = [lot for lot in m.lots if lot.remaining > 0]
        for bucket in (p.txns, p.lots, p.entries, p.open_lots, p.tier_changes, p.vouchers):
            bucket.clear()
        p.voucher_updates.clear()
        p.debited.clear()
        p.debtors.clear()
        k = self.kernel
        k.applied.clear()
        k.touched.clear()
        if k.later_tiers:
            k.later_tiers.clear()
