"""The nightly jobs on members held in memory: points expiry and the tier review.

The database runs them as set-based SQL (``services/jobs.py``, ``services/tier_review.py``);
the simulator replays a history without a database, so it needs the same decisions on
``MemberState`` lots and the qualifying activity of a ``Tracker``. Each function here
mirrors one query of those services, condition for condition, and a test replays random
histories through both to prove they agree. Pure: no database, no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from dateutil.relativedelta import relativedelta

from loyaltyctl.ledger.rulebook import Tracker, VersionRules
from loyaltyctl.ledger.state import MemberState, OpenLot
from loyaltyctl.rules.expiry import inactivity_due
from loyaltyctl.rules.money import from_minor, to_minor
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.tiers import hold_ends, level_index, qualified_level, review_after_hold
from loyaltyctl.rules.timeutil import end_of_local_day, local_midnight


def latest_start(as_of: date, due: Callable[[date], date | None]) -> date:
    """The latest day ``d`` with ``due(d) <= as_of``, for a ``due`` that adds months:
    month-end clamping makes several days share one due date (Jan 29–31 + 1 month are
    all Feb 28), so step forward from the naive answer."""
    probe = as_of - relativedelta(months=1)
    while (value := due(probe)) is not None and value > as_of:
        probe -= relativedelta(months=1)
    while (value := due(probe + timedelta(days=1))) is not None and value <= as_of:
        probe += timedelta(days=1)
    return probe


# ---- points expiry --------------------------------------------------------------------


def lot_expires_on(lot: OpenLot) -> date | None:
    """A lot's expiry date as its key holds it (the replay keeps dates as dates)."""
    if lot.key[0]:
        return None
    expires: Any = lot.key[1]
    return cast(date, expires)


def due_lots(
    members: Iterable[MemberState], spec: Program, as_of: date
) -> list[tuple[MemberState, OpenLot]]:
    """``jobs._due_condition``: lots with points left dated on or before ``as_of``, and
    under ``inactivity`` every lot earned by the end of that day of a member without a
    purchase (or, never having bought, an enrolment) since the policy's months."""
    tz = spec.program.tz
    inactive_before: datetime | None = None
    earned_before: datetime | None = None
    if spec.expiry.policy == "inactivity":
        policy = spec.expiry
        last_day = latest_start(as_of, lambda day: inactivity_due(policy, day))
        inactive_before = local_midnight(last_day + timedelta(days=1), tz)
        earned_before = end_of_local_day(as_of, tz)
    found: list[tuple[MemberState, OpenLot]] = []
    for m in members:
        if not m.lots:
            continue
        inactive = False
        if inactive_before is not None:
            inactive = (m.last_purchase_at or m.enrolled_at) < inactive_before
        for lot in m.lots:
            if lot.remaining <= 0:
                continue
            expires = lot_expires_on(lot)
            if (expires is not None and expires <= as_of) or (
                inactive and earned_before is not None and lot.key[2] < earned_before
            ):
                found.append((m, lot))
    return found


def expiry_moment(lot: OpenLot, start: datetime) -> datetime:
    """``jobs._write_entries``: points leave at the start of the as-of day, never before
    they were earned."""
    earned: datetime = lot.key[2]
    return earned if earned > start else start


# ---- tier review ------------------------------------------------------------------------


@dataclass
class TierMove:
    member: MemberState
    before: str
    after: str
    since: date | None
    why: str


@dataclass
class _Review:
    m: MemberState
    tier: str
    since: date | None
    new_tier: str
    new_since: date | None
    why: str = ""

    def move(self, tier: str, since: date | None, why: str) -> None:
        self.new_tier, self.new_since, self.why = tier, since, why


class Qualifying:
    """What the review reads of the ledger besides the member rows, per member:
    all qualifying activity (``activity``, the kernel's tracker), the activity still
    backing a tier (``backing``: every transaction but returns, without the purchases
    returned in full) and the days of returns (``returns``: one per return)."""

    def __init__(self, activity: Tracker, backing: Tracker, returns: Tracker) -> None:
        self.activity = activity
        self.backing = backing
        self.returns = returns


def _amount(rules: VersionRules, raw: int) -> Decimal:
    if rules.metric == "spend":
        return from_minor(raw, rules.digits)
    return Decimal(raw)


def review_tiers(
    members: Iterable[MemberState], rules: VersionRules, as_of: date, q: Qualifying
) -> list[TierMove]:
    """``tier_review.review_tiers`` in memory: returned upgrades undone, holds ended
    reviewed, catch-up upgrades; the members' tiers are moved and the moves returned in
    member id order."""
    spec = rules.spec
    if len(spec.tiers.levels) <= 1:
        return []
    keys = spec.tier_keys()
    lowest = keys[0]
    view = rules.view
    ordered = sorted(members, key=lambda m: m.id)
    seen: dict[int, _Review] = {}

    def state(m: MemberState) -> _Review:
        return seen.setdefault(m.id, _Review(m, m.tier, m.tier_since, m.tier, m.tier_since))

    lo, hi = rules.window(as_of)
    # 1. Tiers bought and returned (tier_review._returned_upgrades).
    for m in ordered:
        since = m.tier_since
        if m.tier == lowest or since is None:
            continue
        e_lo, e_hi = rules.window(since)
        if q.returns.activity(m.id, view, e_lo, e_hi) <= 0:
            continue
        later = as_of
        if spec.tiers.window == "calendar-year":
            later = min(as_of, date(since.year, 12, 31))
        n_lo, n_hi = rules.window(max(later, since))
        best = max(
            q.backing.activity(m.id, view, e_lo, e_hi),
            q.activity.activity(m.id, view, n_lo, n_hi),
        )
        current = state(m)
        target = qualified_level(spec, _amount(rules, best))
        if level_index(spec, target) < level_index(spec, current.new_tier):
            current.move(target, None if target == lowest else current.new_since, "returned")
    # 2. Holds ended (tier_review._holds_ended, _review_after_hold).
    last_since = latest_start(as_of, lambda day: hold_ends(spec.tiers, day))
    for m in ordered:
        if m.tier == lowest or (m.tier_since is not None and m.tier_since > last_since):
            continue
        current = state(m)
        if current.new_tier == lowest:
            continue
        activity = _amount(rules, q.activity.activity(m.id, view, lo, hi))
        review_after_hold(spec, current, activity, as_of)
    # 3. Catch-up upgrades (tier_review._qualified_above_lowest).
    threshold = spec.tiers.levels[1].min
    if spec.tiers.metric == "spend":
        threshold = Decimal(to_minor(threshold, spec.program.minor_digits))
    floor = int(threshold)
    for m in ordered:
        total = q.activity.activity(m.id, view, lo, hi)
        if total < floor:
            continue
        current = state(m)
        target = qualified_level(spec, _amount(rules, total))
        if level_index(spec, target) > level_index(spec, current.new_tier):
            current.move(target, as_of, "qualified")
    moves = []
    for r in sorted(seen.values(), key=lambda r: r.m.id):
        if (r.new_tier, r.new_since) == (r.tier, r.since):
            continue
        r.m.tier, r.m.tier_since = r.new_tier, r.new_since
        moves.append(TierMove(r.m, r.tier, r.new_tier, r.new_since, r.why))
    return moves
