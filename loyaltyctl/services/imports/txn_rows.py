"""``txn import``: purchases, returns and adjustments, as ``txn post|return|adjust``
would post them."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

from sqlmodel import Session

from loyaltyctl.errors import InvalidInput
from loyaltyctl.ledger.requests import TxnRow
from loyaltyctl.ledger.rulebook import VersionRules
from loyaltyctl.ledger.state import MemberState
from loyaltyctl.rules.categories import normalise_category
from loyaltyctl.rules.limits import (
    CLOCK_SKEW,
    FIRST_YEAR,
    LAST_YEAR,
    check_member,
    check_moment,
    check_points,
    check_ref,
    check_text,
)
from loyaltyctl.rules.money import parse_amount
from loyaltyctl.rules.timeutil import LocalTimes, local_date, parse_when
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.imports.batch import Importer
from loyaltyctl.services.imports.reading import TXN_COLUMNS, TXN_LAYOUT, SourceRow
from loyaltyctl.store.lookups import (
    add_lots_of_txns,
    fetch_later_tiers,
    fetch_open_lots,
    fetch_returned,
    fetch_txns,
)

TXN_KINDS = ("purchase", "return", "adjust")
(
    _T_TYPE,
    _T_MEMBER,
    _T_REF,
    _T_AMOUNT,
    _T_AT,
    _T_CATEGORY,
    _T_ORIGINAL,
    _T_POINTS,
    _T_REASON,
    _T_STORE,
) = range(10)
STORE_LENGTH = 64
_PURCHASE_TYPES = frozenset(("", "purchase"))
_WHOLE = re.compile(r"^[+-]?[0-9]+$")


_NOT_FOR = {
    "purchase": (_T_ORIGINAL, _T_POINTS, _T_REASON),
    "return": (_T_CATEGORY, _T_POINTS, _T_REASON),
    "adjust": (_T_AMOUNT, _T_CATEGORY, _T_ORIGINAL),
}


def check_store(value: str | None, what: str = "store") -> str | None:
    """A store name (the shop or till): printable, at most 64 characters; "" is none."""
    if not value:
        return None
    text = check_text(value, what, STORE_LENGTH)
    if not text.isprintable():
        raise InvalidInput(f"{what} {value!r} is not printable text", hint="e.g. north-street")
    return text or None


class TxnImporter(Importer):
    """Purchases, returns and adjustments, as ``txn post|return|adjust`` would post them."""

    layout = TXN_LAYOUT

    def __init__(
        self, ctx: ProgramContext, *, now: datetime, keeps_locks: bool, lock: bool = True
    ) -> None:
        super().__init__(ctx, now=now, keeps_locks=keeps_locks, lock=lock)
        digits = self.book.digits
        # An amount parse_amount accepts as it is: digits, and at most the currency's
        # decimals (anything else goes the long way, to its error message).
        self._plain_amount = re.compile(
            rf"[0-9]{{1,9}}(?:\.[0-9]{{1,{digits}}})?" if digits else r"[0-9]{1,9}"
        ).fullmatch
        # Rows dated after this are refused (by the long way, which words it).
        self._latest = now + CLOCK_SKEW
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
            or not amount.strip("0.")
            or not member.isprintable()
            or not ref.isprintable()
        ):
            return None
        category = normalise_category(v[_T_CATEGORY])
        if category is not None and (not category.isprintable() or len(category) > 64):
            return None
        store = v[_T_STORE] or None
        if store is not None and (len(store) > STORE_LENGTH or not store.isprintable()):
            return None
        parsed = self._clock.parse(at)
        if parsed is None:
            return None
        when, day = parsed
        if when > self._latest or not FIRST_YEAR <= day.year <= LAST_YEAR:
            return None
        row = TxnRow(src, "purchase", member, ref, when, when, rules, day)
        row.amount = Decimal(amount)
        row.category = category
        row.store = store
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
        member = check_member(v[_T_MEMBER])
        ref = check_ref(v[_T_REF])
        for index in _NOT_FOR[kind]:
            if v[index]:
                raise InvalidInput(
                    f"{TXN_COLUMNS[index]} does not go with type {kind}",
                    hint="leave it empty, or check the type column",
                )
        at = parse_when(v[_T_AT], self.book.tz, what="at") if v[_T_AT] else None
        if at is not None:
            check_moment(at, self.now, "at")
        when = at or self.now
        rules = self.book.at(when)
        row = TxnRow(src, kind, member, ref, at, when, rules, local_date(when, rules.tz))
        row.store = check_store(v[_T_STORE])
        if kind == "adjust":
            raw = v[_T_POINTS]
            if not _WHOLE.match(raw):
                raise InvalidInput(
                    f"points {raw!r} is not a whole number"
                    if raw
                    else "an adjustment needs points",
                    hint="signed points, e.g. 500 or -200",
                )
            row.points = check_points(int(raw))
            row.reason = check_text(v[_T_REASON], "reason")
            if not row.reason:
                raise InvalidInput("an adjustment needs a reason", hint="say why, e.g. 'goodwill'")
            return row
        if not v[_T_AMOUNT]:
            raise InvalidInput(f"a {kind} needs an amount", hint="e.g. 12.50")
        row.amount = parse_amount(v[_T_AMOUNT], self.book.digits, what="amount")
        if kind == "purchase" and not row.amount:
            raise InvalidInput(
                "a purchase of 0 earns nothing and is not recorded",
                hint="give the amount paid, e.g. 12.50",
            )
        if kind == "purchase":
            row.category = normalise_category(check_text(v[_T_CATEGORY], "category", 64))
        else:
            row.original = check_text(v[_T_ORIGINAL], "original", 200)
            if not row.original:
                raise InvalidInput("a return needs original (the purchase's ref)")
        return row

    def apply_row(self, row: TxnRow) -> bool:
        return self.kernel.apply_txn(row)

    def prepare(self, session: Session, parsed: list[TxnRow]) -> list[TxnRow]:
        """Load what the kernel needs to apply ``parsed`` (members, the references they
        name, open lots, qualifying activity) and reserve ids for their postings."""
        k = self.kernel
        bulk = self._start(session)
        self._fetch_members(session, {r.member for r in parsed})
        refs = {r.ref for r in parsed} | {r.original for r in parsed if r.kind == "return"}
        k.known = fetch_txns(session, self.ctx.id, refs)
        fresh = sum(1 for r in parsed if r.ref not in k.known)
        self._new_batch(bulk, fresh, fresh)
        k.returned = fetch_returned(
            session,
            (
                found.id
                for r in parsed
                if r.kind == "return" and (found := k.known.get(r.original)) is not None
            ),
        )
        self.session = session
        days = [r.day for r in parsed]
        touched = [m.id for m in k.touched.values()]
        k.later_tiers = fetch_later_tiers(session, touched, min(days)) if days else {}
        self._load_lots(parsed)
        self._load_activity(session, self._activity_needs(parsed))
        return parsed

    def _load_lots(self, parsed: list[TxnRow]) -> None:
        """Open lots of the members a debit may take from: as many as the batch's
        adjustments take (in order), and the lots of the purchases being returned."""
        needs: dict[MemberState, int] = {}
        own: list[int] = []
        for r in parsed:
            if r.kind == "adjust" and r.points > 0 or r.kind == "purchase":
                continue
            m = self.kernel.members.get(r.member)
            if m is None:
                continue
            if r.kind == "adjust":
                needs[m] = needs.get(m, 0) - r.points
            else:
                needs.setdefault(m, 0)
                if (found := self.kernel.known.get(r.original)) is not None:
                    own.append(found.id)
        kept = {m.id: m for m in needs if m.lots is not None}
        # A member with returns and nothing else to debit starts from its purchases' own
        # lots: more are read only if the clawback needs them (``Kernel.more_lots``).
        for m, points in needs.items():
            if points <= 0 and m.id not in kept:
                m.lots, m.horizon, m.lots_complete = [], None, False
                kept[m.id] = m
        if kept and own:
            # Lots already in memory need no reading (a recent purchase's, mostly).
            held = {lot.txn_id for m in kept.values() for lot in m.lots or ()}
            if missing := [txn_id for txn_id in own if txn_id not in held]:
                add_lots_of_txns(self.session, kept, missing)
        fetch_open_lots(self.session, {m: n for m, n in needs.items() if m.id not in kept}, own)

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
            m = self.kernel.members.get(row.member)
            if m is None or rules.tier_index.get(m.tier, 0) >= rules.top:
                continue
            lo = rules.window(row.day)[0]
            if lo < needs.get(m.id, lo + 1):
                needs[m.id] = lo
        return needs
