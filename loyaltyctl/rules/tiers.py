"""Tier qualification: windows and thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import NamedTuple, Protocol

from dateutil.relativedelta import relativedelta

from loyaltyctl.rules.program import Program, Tiers


def window_bounds(tiers: Tiers, as_of: date) -> tuple[date, date]:
    """Inclusive first day and exclusive end day of the qualifying window ending on
    ``as_of`` (program-local dates)."""
    end = as_of + timedelta(days=1)
    if tiers.window == "calendar-year":
        return date(as_of.year, 1, 1), end
    return end - relativedelta(months=12), end


def qualified_level(program: Program, activity: Decimal) -> str:
    """The highest tier whose threshold ``activity`` reaches."""
    best = program.tiers.levels[0].key
    for level in program.tiers.levels:
        if activity >= level.min:
            best = level.key
    return best


def level_index(program: Program, key: str) -> int:
    keys = program.tier_keys()
    return keys.index(key) if key in keys else 0


def hold_ends(tiers: Tiers, since: date) -> date:
    return since + relativedelta(months=tiers.hold_months)


class TierStep(NamedTuple):
    """One recorded tier change: ``tier`` held from ``from_`` (program-local) on."""

    tier: str
    from_: date
    reason: str = ""


def tier_at(history: Sequence[TierStep], day: date) -> TierStep | None:
    """The step in force on ``day`` in a history ordered oldest first (by date, then
    as recorded): the last one dated on or before it. None before the first step."""
    found = None
    for step in history:
        if step.from_ > day:
            break
        found = step
    return found


def hold_start(history: Sequence[TierStep], day: date, lowest: str) -> date | None:
    """When the hold of the tier held on ``day`` started (the ``tier_since`` of then):
    the date of the step in force, None at the lowest tier or before the history."""
    step = tier_at(history, day)
    if step is None or step.tier == lowest:
        return None
    return step.from_


class Reviewed(Protocol):
    """A member under review: the tier it would hold, and how to move it."""

    new_tier: str

    def move(self, tier: str, since: date | None, why: str) -> None: ...


def review_after_hold(spec: Program, state: Reviewed, activity: Decimal, as_of: date) -> None:
    """A tier whose hold has ended: kept (requalified, or a higher one reached) when the
    window's activity qualifies for it, else one level down (or straight to what the
    activity qualifies for with ``downgrade = "to-qualified"``); the lowest tier has no
    hold. The tier review and the simulator's in-memory review both decide by this."""
    keys = spec.tier_keys()
    qualified = qualified_level(spec, activity)
    held = level_index(spec, state.new_tier)
    if level_index(spec, qualified) >= held and state.new_tier in keys:
        state.move(qualified, as_of, "requalified" if qualified == state.new_tier else "qualified")
        return
    if spec.tiers.downgrade == "to-qualified" or state.new_tier not in keys:
        target = qualified
    else:
        target = keys[max(held - 1, 0)]
    state.move(target, None if target == keys[0] else as_of, "hold ended")
