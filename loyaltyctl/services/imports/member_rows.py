"""``member import``: members enrolled as ``member enroll`` would, with the points they
bring from another system as an opening credit."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlmodel import Session

from loyaltyctl.errors import InvalidInput
from loyaltyctl.ledger.kernel import opening_ref, signup_ref
from loyaltyctl.ledger.requests import MemberRow
from loyaltyctl.rules.limits import check_day, check_member, check_moment, check_points, check_text
from loyaltyctl.rules.timeutil import local_date, parse_day, parse_when
from loyaltyctl.services.imports.batch import Importer
from loyaltyctl.services.imports.reading import MEMBER_LAYOUT, SourceRow
from loyaltyctl.store.lookups import fetch_later_tiers, fetch_txns

_M_MEMBER, _M_NAME, _M_EMAIL, _M_PHONE, _M_BIRTHDAY, _M_AT, _M_OPENING, _M_EXPIRES = range(8)
_COUNT = re.compile(r"^[0-9]+$")


class MemberImporter(Importer):
    """Members enrolled as ``member enroll`` would (signup bonus included), with the
    points they bring from another system as an opening credit."""

    layout = MEMBER_LAYOUT

    def parse(self, src: SourceRow) -> MemberRow:
        if src.problem:
            raise InvalidInput(src.problem)
        v = src.values
        code = check_member(v[_M_MEMBER])
        given = {
            "name": check_text(v[_M_NAME], "name") or None,
            "email": check_text(v[_M_EMAIL], "email") or None,
            "phone": check_text(v[_M_PHONE], "phone") or None,
            "birthday": check_day(parse_day(v[_M_BIRTHDAY], what="birthday"), "birthday")
            if v[_M_BIRTHDAY]
            else None,
        }
        at = parse_when(v[_M_AT], self.book.tz, what="enrolled_at") if v[_M_AT] else None
        if at is not None:
            check_moment(at, self.now, "enrolled_at")
        opening = 0
        if v[_M_OPENING]:
            if not _COUNT.match(v[_M_OPENING]):
                raise InvalidInput(
                    f"opening_balance {v[_M_OPENING]!r} is not a whole number of points",
                    hint="points carried over, e.g. 1200 (0 or empty for none)",
                )
            opening = check_points(int(v[_M_OPENING]), "opening_balance", zero_ok=True)
        expires = (
            check_day(parse_day(v[_M_EXPIRES], what="opening_expires"), "opening_expires")
            if v[_M_EXPIRES]
            else None
        )
        if expires is not None and not opening:
            raise InvalidInput("opening_expires goes with an opening_balance")
        return MemberRow(src, code, given, at, opening, expires)

    def apply_row(self, row: MemberRow) -> bool:
        return self.kernel.enrol_or_repeat(row)

    def prepare(self, session: Session, parsed: list[MemberRow]) -> list[MemberRow]:
        """Load what the kernel needs to apply ``parsed`` and reserve ids."""
        bulk = self._start(session)
        codes = {r.code for r in parsed}
        self._fetch_members(session, codes)
        k = self.kernel
        k.known = fetch_txns(
            session, self.ctx.id, [f(code) for code in codes for f in (signup_ref, opening_ref)]
        )
        fresh = sum(1 for code in codes if code not in k.members)
        k.member_ids = bulk.ids("member", fresh)
        self._new_batch(bulk, 2 * fresh + len(parsed), 2 * fresh + len(parsed))
        needs: dict[int, int] = {}
        for row in parsed:
            m = k.members.get(row.code)
            if m is not None and row.opening:
                rules = self.book.at(m.enrolled_at)
                if rules.bonus_qualifies and rules.tier_index.get(m.tier, 0) < rules.top:
                    lo = rules.window(local_date(m.enrolled_at, rules.tz))[0]
                    needs[m.id] = min(needs.get(m.id, lo), lo)
        self._load_activity(session, needs)
        # An opening balance is dated at enrolment: an upgrade it brings must not be
        # dated before a step already in the member's history.
        openers = [m for row in parsed if row.opening and (m := k.members.get(row.code))]
        k.later_tiers = (
            fetch_later_tiers(
                session,
                [m.id for m in openers],
                min(m.enrolled_at for m in openers).date() - timedelta(days=1),
            )
            if openers
            else {}
        )
        return parsed
