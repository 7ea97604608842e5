"""The posting core: requests applied to members' states, in order, as postings.

Pure: no database, no I/O, no clock. The service that drives it loads the state a batch
needs (members, the references the rows name, open lots, qualifying activity), hands
the kernel the rows, and writes the postings it collects in one transaction. A single
command is a batch of one; an import is many batches; the simulator is a batch that is
never written. So a rule of the ledger lives here once.

Each ``apply`` method returns True when the request was applied and False for an
identical retry of a stored one (which changes nothing); a refusal raises the error of
``loyaltyctl.errors`` that says why."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from loyaltyctl.errors import Conflict, InvalidInput, NotAllowed, NotFound
from loyaltyctl.ledger.postings import Postings, plan_debit
from loyaltyctl.ledger.requests import MemberRow, TxnRow, canonical
from loyaltyctl.ledger.rulebook import RuleBook, Tracker, VersionRules
from loyaltyctl.ledger.state import LOT_KEY, KnownTxn, MemberState, OpenLot
from loyaltyctl.rules.earning import Totals, points_with, purchase_points, return_share
from loyaltyctl.rules.money import from_minor, to_minor
from loyaltyctl.rules.rewards import refuse_inactive
from loyaltyctl.rules.tiers import qualified_level
from loyaltyctl.rules.timeutil import local_date

OPENING_REASON = "opening balance"
NEGATIVE_HINT = "the program forbids negative balances (earn.allow_negative = false)"


def signup_ref(code: str) -> str:
    return f"signup:{code}"


def opening_ref(code: str) -> str:
    """The reference of a member's opening balance: one per member, so a re-run of the
    import finds it."""
    return f"opening:{code}"


def purchase_payload_text(at_iso: str, member: str, category: str | None, amount: str) -> str:
    """``canonical`` of a one-line purchase's payload, written out directly (it is the
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


class Kernel:
    """Applies requests of one program to the members' states a batch loaded.

    State that outlives a batch (the rules, the qualifying activity tracker) is given;
    state of one batch (members, known references, returned totals, the postings) is set
    by the driver before the rows are applied."""

    def __init__(
        self, program_id: int, program_key: str, book: RuleBook, tracker: Tracker, now: datetime
    ) -> None:
        self.program_id = program_id
        self.program_key = program_key
        self.book = book
        self.tracker = tracker
        self.now = now
        self.members: dict[str, MemberState] = {}
        self.touched: dict[str, MemberState] = {}
        self.known: dict[str, KnownTxn] = {}
        # Transactions this batch stored: their row, time and qualifying time.
        self.applied: dict[str, tuple[tuple[Any, ...], datetime, datetime]] = {}
        self.returned: dict[int, Totals] = {}
        self.member_ids: Iterator[int] = iter(())
        # Tier history steps dated after the batch's first day, per member: (day, tier
        # held before the step), oldest first. A row dated before a step earns at the
        # tier held on its day.
        self.later_tiers: dict[int, list[tuple[date, str]]] = {}
        self.postings: Postings
        # Loads every stored open lot of a member, when a debit needs more than the
        # driver loaded up front (a frequent customer may hold hundreds of lots).
        self.more_lots: Callable[[MemberState], None] = _no_more_lots

    # ---- references and retries ------------------------------------------------------

    def store(self, txn: tuple[Any, ...], when: datetime, qual_at: datetime) -> None:
        """Queue a transaction row and remember it by reference for the rest of the batch."""
        self.postings.txns.append(txn)
        self.applied[txn[3]] = (txn, when, qual_at)

    def found(self, ref: str) -> KnownTxn | None:
        """The transaction stored under ``ref``: before this batch or earlier in it."""
        found = self.known.get(ref)
        if found is None and (applied := self.applied.get(ref)) is not None:
            t, when, qual_at = applied
            found = KnownTxn(t[0], t[4], t[2], when, t[7], t[9], t[14], t[15], qual_at, t[8])
        return found

    def not_found(self, code: str) -> NotFound:
        return NotFound(
            f"member {code} not found in program {self.program_key}",
            hint=f"enroll it with: loyaltyctl member enroll {code}",
        )

    def conflict(self, ref: str, kind: str) -> Conflict:
        return Conflict(
            f"reference {ref} was already used for a different {kind} "
            f"in program {self.program_key}",
            hint="use a new ref for a new transaction; an identical retry is safe",
        )

    def duplicate(self, row: TxnRow) -> bool:
        """True for an identical repeat of a stored transaction; Conflict if it differs."""
        found = self.found(row.ref)
        if found is None:
            return False
        if not found.same_request(row.payload(), row.at):
            raise self.conflict(row.ref, found.kind)
        return True

    def member(self, code: str) -> MemberState:
        m = self.members.get(code)
        if m is None:
            raise self.not_found(code)
        return m

    # ---- checks ------------------------------------------------------------------------

    def after_enrolment(self, row: TxnRow, m: MemberState, what: str) -> None:
        tz = self.book.tz
        if m.before_enrolment(row.when, tz):
            raise InvalidInput(
                f"{what} dated {local_date(row.when, tz)} is before member {m.code} enrolled "
                f"({m.enrolled_day(tz)})",
                hint=f"check {row.names.at}, or enroll the member with an earlier date",
            )

    @staticmethod
    def refuse_merged(m: MemberState) -> None:
        """Everything of a merged member moved to another: nothing more lands on it."""
        if m.status == "merged":
            raise NotAllowed(
                f"member {m.code} was merged into another member: it takes nothing more",
                hint=f"its last transaction names the member: loyaltyctl txn list {m.code}",
            )

    # ---- tiers -------------------------------------------------------------------------

    def tier_on(self, m: MemberState, day: date) -> str:
        """The tier ``m`` held on ``day``: the current one unless it changed since."""
        later = self.later_tiers.get(m.id)
        if later:
            for effective, before in later:
                if effective > day:
                    return before
        return m.tier

    def upgrade(self, m: MemberState, rules: VersionRules, day: date, txn_id: int) -> None:
        """Move the member up as soon as the window ending on ``day`` reaches a higher
        threshold. Never down: downgrades wait for the tier review and its hold."""
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
            # Dated by the row's day, never before a step already recorded: a history
            # reads in order, and a review that moved the member later stands.
            later = self.later_tiers.setdefault(m.id, [])
            effective = max(day, later[-1][0]) if later else day
            later.append((effective, m.tier))
            self.postings.tier_change(m, target, effective, "upgrade", txn_id)
            m.tier = target
            m.tier_since = effective
            m.changed = True
            if rules.tier_index[target] == rules.top and len(self.book.versions) == 1:
                self.tracker.drop(m.id)  # nowhere higher to go

    # ---- debits ------------------------------------------------------------------------

    def debit_plan(
        self, m: MemberState, first: list[OpenLot], points: int
    ) -> tuple[list[tuple[OpenLot, int]], int]:
        """The plan over ``first`` then the member's other lots in order; when it reaches
        past the lots loaded so far, the rest are loaded first."""
        skip = set(first)
        while True:
            assert m.lots is not None
            # Kept in order: lots come in order or nearly (sorting them again is cheap),
            # and the plan reads only as far as it needs.
            m.lots.sort(key=LOT_KEY)
            others = (lot for lot in m.lots if lot not in skip)
            plan, short = plan_debit([*first, *others] if first else others, points)
            if m.lots_complete:
                return plan, short
            horizon = m.horizon
            if not short and all(
                lot in first or (horizon is not None and lot.key <= horizon) for lot, _ in plan
            ):
                return plan, short
            self.more_lots(m)

    # ---- purchases, returns, adjustments -------------------------------------------------

    def purchase(self, row: TxnRow) -> bool:
        m = self.members.get(row.member)
        if m is None:
            raise self.not_found(row.member)
        if (row.ref in self.known or row.ref in self.applied) and self.duplicate(row):
            return False
        refuse_inactive(m, "earn points")
        self.after_enrolment(row, m, "a purchase")
        rules = row.rules
        digits = self.book.digits
        if row.lines is None:
            # A back-dated purchase earns at the tier held on its day, not at today's.
            tier = self.tier_on(m, row.day) if self.later_tiers else m.tier
            factors = rules.factors(row.category, tier, row.day)
            amount_minor = to_minor(row.amount, digits)
            if factors is None:
                points = spend = 0
            else:
                points = points_with(row.amount, factors, rules.rounding)
                spend = amount_minor
        else:
            tier = self.tier_on(m, row.day)
            earning = purchase_points(rules.spec, list(row.lines), tier, row.day)
            points = earning.points
            amount_minor = to_minor(row.amount, digits)
            spend = to_minor(earning.eligible_spend, digits)
        postings = self.postings
        txn_id = postings.next_txn_id()
        when = row.when
        at_s, at_iso = postings.ts_iso(when)
        if points > 0:
            available_s = at_s if not rules.pending else postings.ts(when + rules.pending)
            postings.credit(
                m, txn_id, rules.id, "earn", "earn", points, at_s, available_s,
                rules.expires(row.day),
            )  # fmt: skip
        if m.last_purchase_at is None or m.last_purchase_at < when:
            m.last_purchase_at = when
            m.changed = True
        if m.id in self.tracker.members:
            self.tracker.add(m.id, when, points, spend, 1, (rules.tz_name, row.day))
            # The purchase that crosses a threshold earned at the old tier (above).
            self.upgrade(m, rules, row.day, txn_id)
        if row.lines is None:
            payload = purchase_payload_text(at_iso, m.code, row.category, str(row.amount))
        else:
            payload = canonical({**row.payload(), "at": at_iso})
        self.store(
            (
                txn_id, self.program_id, m.id, row.ref, "purchase", at_s, postings.now_s,
                amount_minor, payload, points, m.balance, m.tier, None, None, points, spend,
                1, at_s, rules.id, row.store,
            ),
            when,
            when,
        )  # fmt: skip
        return True

    def return_(self, row: TxnRow) -> bool:
        m = self.member(row.member)
        if self.duplicate(row):
            return False
        self.refuse_merged(m)
        amount = row.amount
        if amount <= 0:
            raise InvalidInput(f"return amount {amount} must be greater than zero")
        original = self.found(row.original)
        if original is None or original.kind != "purchase" or original.member_id != m.id:
            raise NotFound(
                f"purchase {row.original} of member {m.code} not found "
                f"in program {self.program_key}",
                hint=f"see the member's transactions with: loyaltyctl txn list {m.code}",
            )
        when = row.when
        if when < original.occurred_at:
            raise InvalidInput(
                f"the return is dated before purchase {row.original} "
                f"({original.occurred_at.isoformat()})",
                hint=f"check {row.names.at}",
            )
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
            self.book.digits,
            ref=row.original,
            hint=f"check {row.names.amount}",
        )
        claw = share.clawback
        rules = row.rules
        plan: list[tuple[OpenLot, int]] = []
        short = 0
        if claw > 0:
            assert m.lots is not None
            own = [lot for lot in m.lots if lot.txn_id == original.id and lot.remaining > 0]
            plan, short = self.debit_plan(m, own, claw)
            if short and not rules.allow_negative:
                raise NotAllowed(
                    f"return would take {claw} points but member {m.code} has only "
                    f"{m.balance}: the program forbids negative balances",
                    hint=NEGATIVE_HINT,
                )
        postings = self.postings
        txn_id = postings.next_txn_id()
        at_s = postings.ts(when)
        if claw > 0:
            postings.debit(m, txn_id, rules.id, kind="clawback", plan=plan, short=short, at_s=at_s)
        # A later return of the same purchase in this batch counts this one as done.
        self.returned[original.id] = share.after(before)
        qual_p, qual_s, visits = share.qual_points, share.qual_spend_minor, share.qual_visits
        self.tracker.add(m.id, original.qual_at, qual_p, qual_s, visits)
        payload = canonical({**row.payload(), "at": when.isoformat()})
        self.store(
            (
                txn_id, self.program_id, m.id, row.ref, "return", at_s, postings.now_s,
                share.amount_minor, payload, -claw, m.balance, m.tier, original.id, None,
                qual_p, qual_s, visits, postings.ts(original.qual_at), rules.id, row.store,
            ),
            when,
            original.qual_at,
        )  # fmt: skip
        return True

    def adjust(self, row: TxnRow) -> bool:
        m = self.member(row.member)
        if self.duplicate(row):
            return False
        self.refuse_merged(m)
        self.after_enrolment(row, m, "an adjustment")
        rules = row.rules
        points = row.points
        plan: list[tuple[OpenLot, int]] = []
        short = 0
        if points < 0:
            plan, short = self.debit_plan(m, [], -points)
            if short and not rules.allow_negative:
                raise NotAllowed(
                    f"adjustment of {points} exceeds member {m.code}'s balance of {m.balance}: "
                    "the program forbids negative balances",
                    hint=NEGATIVE_HINT,
                )
        postings = self.postings
        txn_id = postings.next_txn_id()
        when = row.when
        at_s = postings.ts(when)
        qual = points if rules.bonus_qualifies else 0
        if points > 0:
            postings.credit(
                m, txn_id, rules.id, "adjust", "adjust", points, at_s, at_s,
                rules.expires(row.day),
            )  # fmt: skip
        else:
            postings.debit(m, txn_id, rules.id, kind="adjust", plan=plan, short=short, at_s=at_s)
        self.tracker.add(m.id, when, qual, 0, 0)
        if points > 0 and rules.bonus_qualifies:
            self.upgrade(m, rules, row.day, txn_id)
        payload = canonical({**row.payload(), "at": when.isoformat()})
        self.store(
            (
                txn_id, self.program_id, m.id, row.ref, "adjust", at_s, postings.now_s, None,
                payload, points, m.balance, m.tier, None, row.reason, qual, 0, 0, at_s,
                rules.id, row.store,
            ),
            when,
            when,
        )  # fmt: skip
        return True

    def apply_txn(self, row: TxnRow) -> bool:
        if row.kind == "purchase":
            return self.purchase(row)
        if row.kind == "return":
            return self.return_(row)
        return self.adjust(row)

    # ---- enrolments and opening balances ---------------------------------------------------

    def enrol_or_repeat(self, row: MemberRow) -> bool:
        m = self.members.get(row.code)
        if m is None:
            self.check_refs_free(row)
            self.enroll(row)
            return True
        self.repeat(m, row)
        if not row.opening:
            return False
        return self.opening(m, row)

    def repeat(self, m: MemberState, row: MemberRow) -> None:
        """The same data again is a no-op; different data is a conflict."""
        if m.erased:
            raise Conflict(
                f"member {m.code} was erased and cannot be enrolled again under that id",
                hint="enroll the person under a new member id",
            )
        differs = [
            key
            for key, value in row.given.items()
            if value is not None and getattr(m, key) != value
        ]
        if differs:
            raise Conflict(
                f"member {m.code} is already enrolled in program {self.program_key} "
                "with a different " + ", ".join(differs),
                hint=f"change details with: loyaltyctl member update {m.code} …",
            )

    def check_refs_free(self, row: MemberRow) -> None:
        for ref in (signup_ref(row.code), opening_ref(row.code)):
            if ref in self.known or ref in self.applied:
                raise Conflict(
                    f"reference {ref} is already used by another transaction in program "
                    f"{self.program_key}",
                    hint="a new member's signup and opening references must be free",
                )

    def enroll(self, row: MemberRow) -> MemberState:
        """A new member at the first tier, with the signup bonus, then the opening credit."""
        at = row.at or self.now
        rules = self.book.at(at)
        m = MemberState(
            id=next(self.member_ids),
            code=row.code,
            status="active",
            tier=rules.first_tier,
            tier_since=None,
            enrolled_at=at,
            balance=0,
            debt=0,
            last_purchase_at=None,
            erased=False,
            **row.given,
        )
        m.new = True
        self.members[row.code] = self.touched[row.code] = m
        self.postings.tier_change(m, m.tier, local_date(at, rules.tz), "enrol", None)
        if rules.bonus_qualifies:
            self.tracker.fresh(m.id)
        points = rules.signup_bonus
        if points > 0:
            postings = self.postings
            txn_id = postings.next_txn_id()
            at_s = postings.ts(at)
            day = local_date(at, rules.tz)
            qual = points if rules.bonus_qualifies else 0
            postings.credit(
                m, txn_id, rules.id, "bonus", "bonus", points, at_s, at_s, rules.expires(day)
            )
            if qual:
                self.tracker.add(m.id, at, qual, 0, 0)
                self.upgrade(m, rules, day, txn_id)
            payload = json.dumps({"kind": "bonus", "member": m.code, "reason": "signup"})
            self.store(
                (
                    txn_id, self.program_id, m.id, signup_ref(m.code), "bonus", at_s,
                    postings.now_s, None, payload, points, m.balance, m.tier, None,
                    "signup bonus", qual, 0, 0, at_s, rules.id, None,
                ),
                at,
                at,
            )  # fmt: skip
        if row.opening:
            self.opening(m, row)
        return m

    def opening(self, m: MemberState, row: MemberRow) -> bool:
        """Points brought from another system: an adjustment-like credit dated at the
        enrolment, into a lot of kind "opening" that expires on ``row.expires`` or by the
        program's expiry policy."""
        ref = opening_ref(m.code)
        at = m.enrolled_at
        payload = {
            "kind": "adjust",
            "member": m.code,
            "points": row.opening,
            "reason": OPENING_REASON,
            "expires": row.expires.isoformat() if row.expires else None,
        }
        found = self.found(ref)
        if found is not None:
            if not found.same_request(payload, at):
                raise self.conflict(ref, found.kind)
            return False
        rules = self.book.at(at)
        postings = self.postings
        txn_id = postings.next_txn_id()
        at_s = postings.ts(at)
        day = local_date(at, rules.tz)
        qual = row.opening if rules.bonus_qualifies else 0
        postings.credit(
            m, txn_id, rules.id, "adjust", "opening", row.opening, at_s, at_s,
            row.expires or rules.expires(day),
        )  # fmt: skip
        if qual:
            self.tracker.add(m.id, at, qual, 0, 0)
            self.upgrade(m, rules, day, txn_id)
        self.store(
            (
                txn_id, self.program_id, m.id, ref, "adjust", at_s, postings.now_s, None,
                canonical({**payload, "at": at.isoformat()}), row.opening, m.balance, m.tier,
                None, OPENING_REASON, qual, 0, 0, at_s, rules.id, None,
            ),
            at,
            at,
        )  # fmt: skip
        return True


def _no_more_lots(m: MemberState) -> None:
    m.lots_complete = True
