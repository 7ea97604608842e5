"""Tier qualification: windows and thresholds."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

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
