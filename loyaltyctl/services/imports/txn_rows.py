"""``txn import``: purchases, returns and adjustments, as ``txn post|return|adjust``
would post them."""

from __future__ import annotations

import itertools
import re
from datetime import date, datetime
from decimal import Decimal
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from sqlmodel import Session

from loyaltyctl.errors import InvalidInput, LoyaltyError, NotAllowed, NotFound
from loyaltyctl.ledger.state import LOT_KEY, MemberState, OpenLot
from loyaltyctl.rules.earning import Totals, points_with, return_share
from loyaltyctl.rules.money import parse_amount, to_minor
from loyaltyctl.rules.timeutil import LocalTimes, local_date, parse_when
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.imports.batch import (
    BatchResult,
    Importer,
    _Batch,
    canonical,
    checked_text,
)
from loyaltyctl.services.imports.reading import TXN_COLUMNS, TXN_LAYOUT, SourceRow
from loyaltyctl.services.imports.rejects import Rejected, reason_of
from loyaltyctl.services.imports.rulebook import VersionRules
from loyaltyctl.store.bulk import (
    add_lots_of_txns,
    fetch_open_lots,
    fetch_returned,
    fetch_txns,
    load_all_lots,
)

TXN_KINDS = ("purchase", "return", "adjust")
_T_TYPE, _T_MEMBER, _T_REF, _T_AMOUNT, _T_AT, _T_CATEGORY, _T_ORIGINAL, _T_POINTS, _T_REASON = (
    range(9)
)
_PURCHASE_TYPES = frozenset(("", "purchase"))
_WHOLE = re.compile(r"^[+-]?\d+$")


def purchase_payload_text(at_iso: str, member: str, category: str | None, amount: str) -> str:
    """``_canonical`` of a one-line purchase's payload, written out directly (it is the
    costliest part of a purchase row otherwise)."""
    cat = "null" if category is None else _json_str(category)
    return (
        '{"at":'
        + _json_str(at_iso)
        + ',"kind":"purchase","lines":[['
        + cat
        + ","
        + _json_str(amount)
        + ']],"member":'
        + _json_str(member)
        + "}"
    )


class TxnRow:
    __slots__ = (
        "src",
        "kind",
        "member",
        "ref",
        "at",
        "when",
        "rules",
        "day",
        "amount",
        "category",
        "original",
        "points",
        "reason",
    )

    def __init__(
        self,
        src: SourceRow,
        kind: str,
        member: str,
        ref: str,
        at: datetime | None,
        when: datetime,
        rules: VersionRules,
        day: date,
    ) -> None:
        self.src = src
        self.kind = kind
        self.member = member
        self.ref = ref
        self.at = at
        self.when = when
        self.rules = rules
        self.day = day
        self.amount = Decimal(0)
        self.category: str | None = None
        self.original = ""
        self.points = 0
        self.reason = ""

    def payload(self) -> dict[str, Any]:
        """The request as services.txns stores it (without its time)."""
        if self.kind == "purchase":
            return {
                "kind": "purchase",
                "member": self.member,
                "lines": [[self.category, str(self.amount)]],
            }
        if self.kind == "return":
            return {
                "kind": "return",
                "member": self.member,
                "original": self.original,
                "amount": str(self.amount),
            }
        return {
            "kind": "adjust",
            "member": self.member,
            "points": self.points,
            "reason": self.reason,
        }


_NOT_FOR = {
    "purchase": (_T_ORIGINAL, _T_POINTS, _T_REASON),
    "return": (_T_CATEGORY, _T_POINTS, _T_REASON),
    "adjust": (_T_AMOUNT, _T_CATEGORY, _T_ORIGINAL),
}


class TxnImporter(Importer):
    """Purchases, returns and adjustments, as ``txn post|return|adjust`` would post them."""

    layout = TXN_LAYOUT

    def __init__(self, ctx: ProgramContext, *, now: datetime, keeps_locks: bool) -> None:
        super().__init__(ctx, now=now, keeps_locks=keeps_locks)
        digits = self.book.digits
        # An amount parse_amount accepts as it is: digits, and at most the currency's
        # decimals (anything else goes the long way, to its error message).
        self._plain_amount = re.compile(
            rf"\d+(?:\.\d{{1,{digits}}})?" if digits else r"\d+"
        ).fullmatch
        self._single = self.book.versions[0] if len(self.book.versions) == 1 else None
        self._clock = LocalTimes(self.book.tz)

    def parse(self, src: SourceRow) -> TxnRow:
        v = src.values
        if src.problem is None and v[_T_TYPE] in _PURCHASE_TYPES and self._single is not None:
            row = self._parse_plain_purchase(src, v, self._single)
            if row is not None:
                return row
        return self._parse_row(src)

    def _parse_plain_purchase(
        self, src: SourceRow, v: list[str], rules: VersionRules
    ) -> TxnRow | None:
        """The common row, a purchase with a local time, in a program with one version:
        the checks and the result of ``_parse_row``, with less work per row. None for
        anything else, which ``_parse_row`` then parses (or refuses with its message)."""
        member, ref, amount, at = v[_T_MEMBER], v[_T_REF], v[_T_AMOUNT], v[_T_AT]
        if (
            not member
            or not ref
            or len(member) > 128
            or len(ref) > 200
            or v[_T_ORIGINAL]
            or v[_T_POINTS]
            or v[_T_REASON]
            or not self._plain_amount(amount)
            or "\x00" in member
            or "\x00" in ref
        ):
            return None
        category = v[_T_CATEGORY] or None
        if category is not None and "\x00" in category:
            return None
        parsed = self._clock.parse(at)
        if parsed is None:
            return None
        when, day = parsed
        row = TxnRow(src, "purchase", member, ref, when, when, rules, day)
        row.amount = Decimal(amount)
        row.category = category
        return row

    def _parse_row(self, src: SourceRow) -> TxnRow:
        if src.problem:
            raise InvalidInput(src.problem)
        v = src.values
        kind = v[_T_TYPE].lower() or "purchase"
        if kind not in TXN_KINDS:
            raise InvalidInput(
                f"type {v[_T_TYPE]!r} is not purchase, return or adjust",
                hint="leave it empty for a purchase",
            )
        member = checked_text(v[_T_MEMBER], "member", 128)
        if not member:
            raise InvalidInput("member is empty", hint="give the member's id, e.g. M-1001")
        ref = checked_text(v[_T_REF], "ref", 200)
        if not ref:
            raise InvalidInput("ref is empty", hint="give your system's reference, e.g. T-1001")
        for index in _NOT_FOR[kind]:
            if v[index]:
                raise InvalidInput(
                    f"{TXN_COLUMNS[index]} does not go with type {kind}",
                    hint="leave it empty, or check the type column",
                )
        at = parse_when(v[_T_AT], self.book.tz, what="at") if v[_T_AT] else None
        when = at or self.now
        rules = self.book.at(when)
        row = TxnRow(src, kind, member, ref, at, when, rules, local_date(when, rules.tz))
        if kind == "adjust":
            raw = v[_T_POINTS]
            if not _WHOLE.match(raw):
                raise InvalidInput(
                    f"points {raw!r} is not a whole number"
                    if raw
                    else "an adjustment needs points",
                    hint="signed points, e.g. 500 or -200",
                )
            row.points = int(raw)
            if row.points == 0:
                raise InvalidInput(
                    "points must not be 0", hint="give a positive or negative number"
                )
            row.reason = checked_text(v[_T_REASON], "reason")
            if not row.reason:
                raise InvalidInput("an adjustment needs a reason", hint="say why, e.g. 'goodwill'")
            return row
        if not v[_T_AMOUNT]:
            raise InvalidInput(f"a {kind} needs an amount", hint="e.g. 12.50")
        row.amount = parse_amount(v[_T_AMOUNT], self.book.digits, what="amount")
        if kind == "purchase":
            row.category = checked_text(v[_T_CATEGORY], "category") or None
        else:
            row.original = checked_text(v[_T_ORIGINAL], "original", 200)
            if not row.original:
                raise InvalidInput("a return needs original (the purchase's ref)")
        return row

    def apply(self, session: Session, rows: list[SourceRow]) -> BatchResult:
        result = BatchResult(rows=len(rows), last_line=rows[-1].line if rows else 0)
        parsed: list[TxnRow] = []
        for src in rows:
            try:
                parsed.append(self.parse(src))
            except LoyaltyError as exc:
                result.rejected.append(Rejected(src, reason_of(exc)))
        bulk = self._start(session)
        self._fetch_members(session, {r.member for r in parsed})
        refs = {r.ref for r in parsed} | {r.original for r in parsed if r.kind == "return"}
        self.known = fetch_txns(session, self.ctx.id, refs)
        self.applied = {}
        fresh = sum(1 for r in parsed if r.ref not in self.known)
        self.batch = batch = self._new_batch(bulk, fresh, fresh)
        self.returned = fetch_returned(
            session,
            (
                found.id
                for r in parsed
                if r.kind == "return" and (found := self.known.get(r.original)) is not None
            ),
        )
        self.session = session
        self._load_lots(parsed)
        self.tracker.load(session, self._activity_needs(parsed))
        apply_row = {"purchase": self._purchase, "return": self._return, "adjust": self._adjust}
        for row in parsed:
            try:
                if apply_row[row.kind](row):
                    result.applied += 1
                else:
                    result.duplicates += 1
            except LoyaltyError as exc:
                result.rejected.append(Rejected(row.src, reason_of(exc)))
        result.rejected.sort(key=lambda item: item.row.line)
        self._finish(bulk, batch)
        return result

    def _load_lots(self, parsed: list[TxnRow]) -> None:
        """Open lots of the members a debit may take from: as many as the batch's
        adjustments take (in order), and the lots of the purchases being returned."""
        needs: dict[MemberState, int] = {}
        own: list[int] = []
        for r in parsed:
            if r.kind == "adjust" and r.points > 0 or r.kind == "purchase":
                continue
            m = self.members.get(r.member)
            if m is None:
                continue
            if r.kind == "adjust":
                needs[m] = needs.get(m, 0) - r.points
            else:
                needs.setdefault(m, 0)
                if (found := self.known.get(r.original)) is not None:
                    own.append(found.id)
        kept = {m.id: m for m in needs if m.lots is not None}
        if kept and own:
            add_lots_of_txns(self.session, kept, own)
        fetch_open_lots(self.session, {m: n for m, n in needs.items() if m.id not in kept}, own)

    def _debit_plan(
        self, m: MemberState, first: list[OpenLot], points: int
    ) -> tuple[list[tuple[OpenLot, int]], int]:
        """services.ledger.debit's plan over ``first`` then the member's other lots in
        order; when it reaches past the lots loaded so far, the rest are loaded first."""
        skip = set(first)
        while True:
            assert m.lots is not None
            # Kept in order: lots come in order or nearly (sorting them again is cheap),
            # and the plan reads only as far as it needs.
            m.lots.sort(key=LOT_KEY)
            others = (lot for lot in m.lots if lot not in skip)
            plan, short = _Batch.plan_debit(itertools.chain(first, others), points)
            if m.lots_complete:
                return plan, short
            horizon = m.horizon
            if not short and all(
                lot in first or (horizon is not None and lot.key <= horizon) for lot, _ in plan
            ):
                return plan, short
            load_all_lots(self.session, m)

    def _activity_needs(self, parsed: list[TxnRow]) -> dict[int, int]:
        """From which day each member's qualifying activity must be known: members below
        their top tier with a row that may upgrade them."""
        needs: dict[int, int] = {}
        for row in parsed:
            rules = row.rules
            if row.kind == "return" or (
                row.kind == "adjust" and not (row.points > 0 and rules.bonus_qualifies)
            ):
                continue
            m = self.members.get(row.member)
            if m is None or rules.tier_index.get(m.tier, 0) >= rules.top:
                continue
            lo = rules.window(row.day)[0]
            if lo < needs.get(m.id, lo + 1):
                needs[m.id] = lo
        return needs

    def _member(self, row: TxnRow) -> MemberState:
        m = self.members.get(row.member)
        if m is None:
            raise self._not_found(row.member)
        return m

    def _duplicate(self, row: TxnRow) -> bool:
        """True for an identical repeat of a stored transaction; Conflict if it differs."""
        found = self._found(row.ref)
        if found is None:
            return False
        if not found.same_request(row.payload(), row.at):
            raise self._conflict(row.ref, found.kind)
        return True

    def _after_enrolment(self, row: TxnRow, m: MemberState, what: str) -> None:
        tz = self.book.tz
        if m.before_enrolment(row.when, tz):
            raise InvalidInput(
                f"{what} dated {local_date(row.when, tz)} is before member {m.code} enrolled "
                f"({m.enrolled_day(tz)})",
                hint="check at, or enroll the member with an earlier date",
            )

    def _purchase(self, row: TxnRow) -> bool:
        m = self.members.get(row.member)
        if m is None:
            raise self._not_found(row.member)
        if (row.ref in self.known or row.ref in self.applied) and self._duplicate(row):
            return False
        if m.status != "active":
            raise NotAllowed(
                f"member {m.code} is {m.status} and cannot earn points",
                hint=f"reactivate it first with: loyaltyctl member reactivate {m.code}"
                if m.status == "suspended"
                else None,
            )
        self._after_enrolment(row, m, "a purchase")
        rules = row.rules
        factors = rules.factors(row.category, m.tier, row.day)
        amount_minor = to_minor(row.amount, self.book.digits)
        if factors is None:
            points = spend = 0
        else:
            points = points_with(row.amount, factors, rules.rounding)
            spend = amount_minor
        batch = self.batch
        txn_id = batch.next_txn_id()
        when = row.when
        at_s, at_iso = batch.bulk.ts_iso(when)
        if points > 0:
            available_s = at_s if not rules.pending else batch.bulk.ts(when + rules.pending)
            batch.credit(
                m,
                txn_id,
                rules.id,
                "earn",
                "earn",
                points,
                at_s,
                available_s,
                rules.expires(row.day),
            )
        if m.last_purchase_at is None or m.last_purchase_at < when:
            m.last_purchase_at = when
            m.changed = True
        if m.id in self.tracker.members:
            self.tracker.add(m.id, when, points, spend, 1, (rules.tz_name, row.day))
            self._upgrade(m, rules, row.day)
        payload = purchase_payload_text(at_iso, m.code, row.category, str(row.amount))
        self._store(
            (
                txn_id,
                self.ctx.id,
                m.id,
                row.ref,
                "purchase",
                at_s,
                batch.now_s,
                amount_minor,
                payload,
                points,
                m.balance,
                m.tier,
                None,
                None,
                points,
                spend,
                1,
                at_s,
                rules.id,
            ),
            when,
            when,
        )
        return True

    def _return(self, row: TxnRow) -> bool:
        m = self._member(row)
        if self._duplicate(row):
            return False
        amount = row.amount
        if amount <= 0:
            raise InvalidInput(f"return amount {amount} must be greater than zero")
        original = self._found(row.original)
        if original is None or original.kind != "purchase" or original.member_id != m.id:
            raise NotFound(
                f"purchase {row.original} of member {m.code} not found in program {self.ctx.key}",
                hint=f"see the member's transactions with: loyaltyctl txn list {m.code}",
            )
        when = row.when
        if when < original.occurred_at:
            raise InvalidInput(
                f"the return is dated before purchase {row.original} "
                f"({original.occurred_at.isoformat()})",
                hint="check at",
            )
        digits = self.book.digits
        before = self.returned.get(original.id, Totals())
        assert original.amount_minor is not None
        share = return_share(
            Totals(
                original.amount_minor,
                original.points,
                original.qual_points,
                original.qual_spend_minor,
            ),
            before,
            amount,
            digits,
            ref=row.original,
            hint="check amount",
        )
        claw = share.clawback
        rules = row.rules
        plan: list[tuple[OpenLot, int]] = []
        short = 0
        if claw > 0:
            assert m.lots is not None
            own = [lot for lot in m.lots if lot.txn_id == original.id and lot.remaining > 0]
            plan, short = self._debit_plan(m, own, claw)
            if short and not rules.allow_negative:
                raise NotAllowed(
                    f"return would take {claw} points but member {m.code} has only "
                    f"{m.balance}: the program forbids negative balances",
                    hint="the program forbids negative balances (earn.allow_negative = false)",
                )
        batch = self.batch
        txn_id = batch.next_txn_id()
        at_s = batch.bulk.ts(when)
        if claw > 0:
            batch.debit(m, txn_id, rules.id, kind="clawback", plan=plan, short=short, at_s=at_s)
        # A later return of the same purchase in this batch counts this one as done.
        self.returned[original.id] = share.after(before)
        amount_minor = share.amount_minor
        qual_p, qual_s, visits = share.qual_points, share.qual_spend_minor, share.qual_visits
        self.tracker.add(m.id, original.qual_at, qual_p, qual_s, visits)
        payload = canonical({**row.payload(), "at": when.isoformat()})
        self._store(
            (
                txn_id,
                self.ctx.id,
                m.id,
                row.ref,
                "return",
                at_s,
                batch.now_s,
                amount_minor,
                payload,
                -claw,
                m.balance,
                m.tier,
                original.id,
                None,
                qual_p,
                qual_s,
                visits,
                batch.bulk.ts(original.qual_at),
                rules.id,
            ),
            when,
            original.qual_at,
        )
        return True

    def _adjust(self, row: TxnRow) -> bool:
        m = self._member(row)
        if self._duplicate(row):
            return False
        self._after_enrolment(row, m, "an adjustment")
        rules = row.rules
        points = row.points
        plan: list[tuple[OpenLot, int]] = []
        short = 0
        if points < 0:
            plan, short = self._debit_plan(m, [], -points)
            if short and not rules.allow_negative:
                raise NotAllowed(
                    f"adjustment of {points} exceeds member {m.code}'s balance of {m.balance}: "
                    "the program forbids negative balances",
                    hint="the program forbids negative balances (earn.allow_negative = false)",
                )
        batch = self.batch
        txn_id = batch.next_txn_id()
        when = row.when
        at_s = batch.bulk.ts(when)
        qual = points if rules.bonus_qualifies else 0
        if points > 0:
            batch.credit(
                m,
                txn_id,
                rules.id,
                "adjust",
                "adjust",
                points,
                at_s,
                at_s,
                rules.expires(row.day),
            )
        else:
            batch.debit(m, txn_id, rules.id, kind="adjust", plan=plan, short=short, at_s=at_s)
        self.tracker.add(m.id, when, qual, 0, 0)
        if points > 0 and rules.bonus_qualifies:
            self._upgrade(m, rules, row.day)
        payload = canonical({**row.payload(), "at": when.isoformat()})
        self._store(
            (
                txn_id,
                self.ctx.id,
                m.id,
                row.ref,
                "adjust",
                at_s,
                batch.now_s,
                None,
                payload,
                points,
                m.balance,
                m.tier,
                None,
                row.reason,
                qual,
                0,
                0,
                at_s,
                rules.id,
            ),
            when,
            when,
        )
        return True
