"""``member import``: members enrolled as ``member enroll`` would, with the points they
bring from another system as an opening credit."""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Any

from sqlmodel import Session

from loyaltyctl.errors import Conflict, InvalidInput, LoyaltyError
from loyaltyctl.ledger.state import MemberState
from loyaltyctl.rules.timeutil import local_date, parse_day, parse_when
from loyaltyctl.services.imports.batch import BatchResult, Importer, canonical, checked_text
from loyaltyctl.services.imports.reading import MEMBER_LAYOUT, SourceRow
from loyaltyctl.services.imports.rejects import Rejected, reason_of
from loyaltyctl.services.members import signup_ref
from loyaltyctl.store.bulk import fetch_txns

OPENING_REASON = "opening balance"

_M_MEMBER, _M_NAME, _M_EMAIL, _M_PHONE, _M_BIRTHDAY, _M_AT, _M_OPENING, _M_EXPIRES = range(8)
_COUNT = re.compile(r"^\d+$")


def opening_ref(code: str) -> str:
    return f"opening:{code}"


class MemberRow:
    __slots__ = ("src", "code", "given", "at", "opening", "expires")

    def __init__(
        self,
        src: SourceRow,
        code: str,
        given: dict[str, Any],
        at: datetime | None,
        opening: int,
        expires: date | None,
    ) -> None:
        self.src = src
        self.code = code
        self.given = given
        self.at = at
        self.opening = opening
        self.expires = expires


class MemberImporter(Importer):
    """Members enrolled as ``member enroll`` would (signup bonus included), with the
    points they bring from another system as an opening credit."""

    layout = MEMBER_LAYOUT

    def parse(self, src: SourceRow) -> MemberRow:
        if src.problem:
            raise InvalidInput(src.problem)
        v = src.values
        code = checked_text(v[_M_MEMBER], "member", 128)
        if not code:
            raise InvalidInput("member is empty", hint="give the member's id, e.g. M-1001")
        given = {
            "name": checked_text(v[_M_NAME], "name") or None,
            "email": checked_text(v[_M_EMAIL], "email") or None,
            "phone": checked_text(v[_M_PHONE], "phone") or None,
            "birthday": parse_day(v[_M_BIRTHDAY], what="birthday") if v[_M_BIRTHDAY] else None,
        }
        at = parse_when(v[_M_AT], self.book.tz, what="enrolled_at") if v[_M_AT] else None
        opening = 0
        if v[_M_OPENING]:
            if not _COUNT.match(v[_M_OPENING]):
                raise InvalidInput(
                    f"opening_balance {v[_M_OPENING]!r} is not a whole number of points",
                    hint="points carried over, e.g. 1200 (0 or empty for none)",
                )
            opening = int(v[_M_OPENING])
        expires = parse_day(v[_M_EXPIRES], what="opening_expires") if v[_M_EXPIRES] else None
        if expires is not None and not opening:
            raise InvalidInput("opening_expires goes with an opening_balance")
        return MemberRow(src, code, given, at, opening, expires)

    def apply(self, session: Session, rows: list[SourceRow]) -> BatchResult:
        result = BatchResult(rows=len(rows), last_line=rows[-1].line if rows else 0)
        parsed: list[MemberRow] = []
        for src in rows:
            try:
                parsed.append(self.parse(src))
            except LoyaltyError as exc:
                result.rejected.append(Rejected(src, reason_of(exc)))
        bulk = self._start(session)
        codes = {r.code for r in parsed}
        self._fetch_members(session, codes)
        self.known = fetch_txns(
            session, self.ctx.id, [f(code) for code in codes for f in (signup_ref, opening_ref)]
        )
        self.applied = {}
        fresh = sum(1 for code in codes if code not in self.members)
        self.member_ids = bulk.ids("member", fresh)
        self.batch = batch = self._new_batch(bulk, 2 * fresh + len(parsed), 2 * fresh + len(parsed))
        needs: dict[int, int] = {}
        for row in parsed:
            m = self.members.get(row.code)
            if m is not None and row.opening:
                rules = self.book.at(m.enrolled_at)
                if rules.bonus_qualifies and rules.tier_index.get(m.tier, 0) < rules.top:
                    lo = rules.window(local_date(m.enrolled_at, rules.tz))[0]
                    needs[m.id] = min(needs.get(m.id, lo), lo)
        self.tracker.load(session, needs)
        for row in parsed:
            try:
                if self._apply_row(row):
                    result.applied += 1
                else:
                    result.duplicates += 1
            except LoyaltyError as exc:
                result.rejected.append(Rejected(row.src, reason_of(exc)))
        result.rejected.sort(key=lambda item: item.row.line)
        self._finish(bulk, batch)
        return result

    def _apply_row(self, row: MemberRow) -> bool:
        m = self.members.get(row.code)
        if m is None:
            self._check_refs_free(row)
            self._enroll(row)
            return True
        self._repeat(m, row)
        if not row.opening:
            return False
        return self._opening(m, row)

    def _repeat(self, m: MemberState, row: MemberRow) -> None:
        """services.members._repeat_enroll: the same data again is a no-op."""
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
                f"member {m.code} is already enrolled in program {self.ctx.key} with a different "
                + ", ".join(differs),
                hint=f"change details with: loyaltyctl member update {m.code} …",
            )

    def _check_refs_free(self, row: MemberRow) -> None:
        for ref in (signup_ref(row.code), opening_ref(row.code)):
            if ref in self.known or ref in self.applied:
                raise Conflict(
                    f"reference {ref} is already used by another transaction in program "
                    f"{self.ctx.key}",
                    hint="a new member's signup and opening references must be free",
                )

    def _enroll(self, row: MemberRow) -> None:
        """services.members.enroll and _signup_bonus, then the opening credit."""
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
        if rules.bonus_qualifies:
            self.tracker.fresh(m.id)
        points = rules.signup_bonus
        if points > 0:
            batch = self.batch
            txn_id = batch.next_txn_id()
            at_s = batch.bulk.ts(at)
            day = local_date(at, rules.tz)
            qual = points if rules.bonus_qualifies else 0
            batch.credit(
                m,
                txn_id,
                rules.id,
                "bonus",
                "bonus",
                points,
                at_s,
                at_s,
                rules.expires(day),
            )
            if qual:
                self.tracker.add(m.id, at, qual, 0, 0)
                self._upgrade(m, rules, day)
            payload = json.dumps({"kind": "bonus", "member": m.code, "reason": "signup"})
            self._store(
                (
                    txn_id,
                    self.ctx.id,
                    m.id,
                    signup_ref(m.code),
                    "bonus",
                    at_s,
                    batch.now_s,
                    None,
                    payload,
                    points,
                    m.balance,
                    m.tier,
                    None,
                    "signup bonus",
                    qual,
                    0,
                    0,
                    at_s,
                    rules.id,
                ),
                at,
                at,
            )
        if row.opening:
            self._opening(m, row)

    def _opening(self, m: MemberState, row: MemberRow) -> bool:
        """Points brought from another system: an adjustment-like credit dated at the
        enrolment, into a lot of kind "opening" that expires on opening_expires or by the
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
        found = self._found(ref)
        if found is not None:
            if not found.same_request(payload, at):
                raise self._conflict(ref, found.kind)
            return False
        rules = self.book.at(at)
        batch = self.batch
        txn_id = batch.next_txn_id()
        at_s = batch.bulk.ts(at)
        day = local_date(at, rules.tz)
        qual = row.opening if rules.bonus_qualifies else 0
        batch.credit(
            m,
            txn_id,
            rules.id,
            "adjust",
            "opening",
            row.opening,
            at_s,
            at_s,
            row.expires or rules.expires(day),
        )
        if qual:
            self.tracker.add(m.id, at, qual, 0, 0)
            self._upgrade(m, rules, day)
        text_ = canonical({**payload, "at": at.isoformat()})
        self._store(
            (
                txn_id,
                self.ctx.id,
                m.id,
                ref,
                "adjust",
                at_s,
                batch.now_s,
                None,
                text_,
                row.opening,
                m.balance,
                m.tier,
                None,
                OPENING_REASON,
                qual,
                0,
                0,
                at_s,
                rules.id,
            ),
            at,
            at,
        )
        return True
