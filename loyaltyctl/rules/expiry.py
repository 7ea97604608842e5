"""When a lot of points expires. A lot's expiry date is the day its points leave:
``expire --as-of D`` takes every lot whose date is on or before D."""

from __future__ import annotations

import calendar
from datetime import date

from dateutil.relativedelta import relativedelta

from loyaltyctl.rules.program import Expiry


def month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def lot_expiry(policy: Expiry, earned_on: date) -> date | None:
    """Expiry date of points earned on ``earned_on`` (program-local), or None for policies
    where lots do not carry their own date (``never``, ``inactivity``)."""
    if policy.policy == "rolling":
        assert policy.months is not None
        due = earned_on + relativedelta(months=policy.months)
        return month_end(due) if policy.month_end else due
    if policy.policy == "fixed_date":
        assert policy.day is not None
        month, day = (int(part) for part in policy.day.split("-"))
        return date(earned_on.year + policy.years, month, day)
    return None


def inactivity_due(policy: Expiry, last_activity: date) -> date | None:
    """The day all of an inactive member's points expire."""
    if policy.policy != "inactivity":
        return None
    assert policy.months is not None
    return last_activity + relativedelta(months=policy.months)
