"""``report liability``: what the program owes, how it moved, and what it will cost.

The roll-forward, the ageing of the points still in lots, the cohorts by month of
earning and the chain-ladder estimate of their redemptions (``rules/breakage.py``), and
the period's journal entries. Every figure comes from a few grouped queries over the
ledger (points_entry joined to its lot), so memory does not grow with members or
transactions: Python only sees one row per month, kind and expiry date.
docs/economics.md gives the formulas and a worked example.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from dateutil.relativedelta import relativedelta
from sqlalchemy import ColumnElement, case, func, select
from sqlmodel import Session, col

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.breakage import CohortFigures, Estimate, estimate
from loyaltyctl.rules.money import format_amount
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.timeutil import as_utc, local_date, local_midnight
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.statements import spec_at
from loyaltyctl.store.models import Member, PointsEntry, PointsLot

BUCKETS = ("0-30d", "31-90d", "91-180d", "181-365d", ">365d", "never")
MOVEMENTS = (
    "issued",
    "returned",
    "redeemed",
    "refunded",
    "expired",
    "adjusted_in",
    "adjusted_out",
)
# Default ledger accounts of the journal.
SALES = "Sales"
LIABILITY = "Loyalty liability"
REVENUE = "Loyalty revenue"


@dataclass
class RollForward:
    """Points: ``closing = opening + issued − returned − redeemed + refunded − expired
    + adjusted_in − adjusted_out``."""

    opening_balance: int = 0
    issued: int = 0
    returned: int = 0
    redeemed: int = 0
    refunded: int = 0
    expired: int = 0
    adjusted_in: int = 0
    adjusted_out: int = 0
    closing_balance: int = 0

    def net(self) -> int:
        return (
            self.issued
            - self.returned
            - self.redeemed
            + self.refunded
            - self.expired
            + self.adjusted_in
            - self.adjusted_out
        )


@dataclass
class MonthRoll(RollForward):
    month: str = ""


@dataclass
class AgeingBucket:
    bucket: str
    points: int


@dataclass
class ExpiringMonth:
    month: str
    points: int


@dataclass
class CohortRow:
    cohort: str
    issued: int
    redeemed: int
    expired: int
    outstanding: int
    ultimate_redemption_rate: float
    expected_redemptions: int


@dataclass
class JournalEntry:
    date: date
    account: str
    debit: str
    credit: str
    memo: str


@dataclass
class LiabilityReport:
    program: str
    from_: date
    to: date
    currency: str
    point_value: str
    opening_balance: int
    issued: int
    returned: int
    redeemed: int
    refunded: int
    expired: int
    adjusted_in: int
    adjusted_out: int
    closing_balance: int
    opening_value: str
    closing_value: str
    ageing: list[AgeingBucket]
    cohorts: list[CohortRow]
    points_in_lots: int
    expected_redemption_rate: float
    expected_breakage_points: int
    deferred_revenue: str
    opening_deferred_revenue: str
    estimate_method: str
    development_factors: list[float]
    months: list[MonthRoll] = field(default_factory=list)
    expiring: list[ExpiringMonth] = field(default_factory=list)
    journal: list[JournalEntry] = field(default_factory=list)


# ---- periods and months --------------------------------------------------------------------


def liability_days(first: date | None, last: date | None, today: date) -> tuple[date, date]:
    """The period: ``--to`` defaults to today, ``--from`` to the first day of its month."""
    last = last or today
    first = first or last.replace(day=1)
    if first > last:
        raise InvalidInput(
            f"--from {first} is after --to {last}",
            hint="give the first and last day, e.g. --from 2026-10-01 --to 2026-10-31",
        )
    return first, last


def month_key(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _months(first: date, last: date) -> list[date]:
    """First days of the months from ``first``'s to ``last``'s, inclusive."""
    found, month = [], first.replace(day=1)
    while month <= last:
        found.append(month)
        month += relativedelta(months=1)
    return found


def _month_index(column: Any, starts: Sequence[datetime]) -> ColumnElement[int]:
    """0 before ``starts[0]``, 1 before ``starts[1]``, …: which month an instant is in,
    portable SQL (one CASE), with the months' bounds in the program's zone."""
    if not starts:
        return case((column.is_(None), 0), else_=0)
    whens = [(column < start, i) for i, start in enumerate(starts)]
    return case(*whens, else_=len(starts))


def _money(points: int | Fraction, spec: Program) -> Decimal:
    digits = spec.program.minor_digits
    value = Fraction(points) * Fraction(spec.program.point_value)
    exact = Decimal(value.numerator) / Decimal(value.denominator)
    return exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


def _amount(value: Decimal, spec: Program) -> str:
    return format_amount(value, spec.program.minor_digits)


# ---- the report ----------------------------------------------------------------------------


def liability(
    session: Session,
    ctx: ProgramContext,
    *,
    first: date | None = None,
    last: date | None = None,
    now: datetime,
) -> LiabilityReport:
    now = as_utc(now)
    first, last = liability_days(first, last, local_date(now, ctx.spec.program.tz))
    spec = spec_at(ctx, local_midnight(last + timedelta(days=1), ctx.spec.program.tz))
    tz = spec.program.tz
    start, end = local_midnight(first, tz), local_midnight(last + timedelta(days=1), tz)
    months = _months(first, last)
    total, by_month = _roll_forward(session, ctx.id, spec, start, end, months)
    in_lots = _lots_by_expiry(session, ctx.id, end)
    closing = _evaluate(session, ctx.id, spec, last)
    opening = _evaluate(session, ctx.id, spec, first - timedelta(days=1))
    rate = closing.rate
    deferred = _money(closing.expected, spec)
    opening_deferred = _money(opening.expected, spec)
    return LiabilityReport(
        program=ctx.key,
        from_=first,
        to=last,
        currency=spec.program.currency,
        point_value=format(spec.program.point_value, "f"),
        opening_balance=total.opening_balance,
        issued=total.issued,
        returned=total.returned,
        redeemed=total.redeemed,
        refunded=total.refunded,
        expired=total.expired,
        adjusted_in=total.adjusted_in,
        adjusted_out=total.adjusted_out,
        closing_balance=total.closing_balance,
        opening_value=_amount(_money(total.opening_balance, spec), spec),
        closing_value=_amount(_money(total.closing_balance, spec), spec),
        ageing=_ageing(in_lots, last),
        cohorts=_cohort_rows(closing),
        points_in_lots=sum(in_lots.values()),
        expected_redemption_rate=round(float(rate), 6),
        expected_breakage_points=closing.estimate.breakage,
        deferred_revenue=_amount(deferred, spec),
        opening_deferred_revenue=_amount(opening_deferred, spec),
        estimate_method=closing.estimate.method,
        development_factors=[round(float(f), 6) for f in closing.estimate.factors],
        months=by_month,
        expiring=_expiring(in_lots, last),
        journal=_journal(total, spec, last, rate, opening_deferred, deferred),
    )


def _roll_forward(
    session: Session,
    program_id: int,
    spec: Program,
    start: datetime,
    end: datetime,
    months: Sequence[date],
) -> tuple[RollForward, list[MonthRoll]]:
    """One grouped query: every entry before ``end`` by month (-1 = before the period),
    kind and sign."""
    tz = spec.program.tz
    bounds = [start, *(local_midnight(m, tz) for m in months[1:])]
    e = PointsEntry
    rows = (
        select(
            _month_index(col(e.at), bounds).label("m"),
            col(e.kind).label("kind"),
            case((col(e.points) > 0, 1), else_=0).label("pos"),
            col(e.points).label("points"),
        )
        .join(Member, col(Member.id) == col(e.member_id))
        .where(col(Member.program_id) == program_id, col(e.at) < end)
        .subquery()
    )
    grouped = session.connection().execute(
        select(rows.c.m, rows.c.kind, rows.c.pos, func.sum(rows.c.points)).group_by(
            rows.c.m, rows.c.kind, rows.c.pos
        )
    )
    rolls = [MonthRoll(month=month_key(m)) for m in months]
    opening = 0
    for m, kind, pos, points in grouped:
        index, points = int(m) - 1, int(points or 0)
        if index < 0:
            opening += points
        else:
            _add(rolls[index], kind, bool(pos), points)
    total = RollForward(opening_balance=opening)
    balance = opening
    for roll in rolls:
        roll.opening_balance = balance
        roll.closing_balance = balance = balance + roll.net()
        for name in MOVEMENTS:
            setattr(total, name, getattr(total, name) + getattr(roll, name))
    total.closing_balance = balance
    return total, rolls


def _add(roll: RollForward, kind: str, positive: bool, points: int) -> None:
    """Entry kinds to roll-forward lines. A credit that settles a debt is still issued
    (or refunded): balances count debts, so the identity holds."""
    if kind in ("earn", "bonus"):
        roll.issued += points
    elif kind == "clawback":
        roll.returned -= points
    elif kind == "redeem":
        roll.redeemed -= points
    elif kind == "refund":
        roll.refunded += points
    elif kind == "expire":
        roll.expired -= points
    elif kind == "adjust" and positive:
        roll.adjusted_in += points
    elif kind == "adjust":
        roll.adjusted_out -= points


# ---- points in lots: ageing and expiring ---------------------------------------------------


def _lots_by_expiry(session: Session, program_id: int, end: datetime) -> dict[date | None, int]:
    """Points still in lots at ``end`` by expiry date: a lot's remainder then is the sum
    of its entries before it."""
    e, lot = PointsEntry, PointsLot
    rows = session.connection().execute(
        select(col(lot.expires_on), func.sum(e.points))
        .select_from(e)
        .join(lot, col(lot.id) == col(e.lot_id))
        .join(Member, col(Member.id) == col(lot.member_id))
        .where(col(Member.program_id) == program_id, col(e.at) < end)
        .group_by(col(lot.expires_on))
    )
    return {day: int(points) for day, points in rows if points}


def bucket_of(expires_on: date | None, to: date) -> str:
    """Days from the end of the period to the expiry date; a lot already past its date
    that no expiry run has taken yet counts as 0-30d."""
    if expires_on is None:
        return "never"
    days = (expires_on - to).days
    if days <= 30:
        return "0-30d"
    if days <= 90:
        return "31-90d"
    if days <= 180:
        return "91-180d"
    if days <= 365:
        return "181-365d"
    return ">365d"


def _ageing(in_lots: dict[date | None, int], to: date) -> list[AgeingBucket]:
    totals = dict.fromkeys(BUCKETS, 0)
    for day, points in in_lots.items():
        totals[bucket_of(day, to)] += points
    return [AgeingBucket(name, points) for name, points in totals.items()]


def _expiring(in_lots: dict[date | None, int], to: date) -> list[ExpiringMonth]:
    """Points that will expire, by month; those already past their date leave at the
    next expiry run, so they count in the month after ``to``'s last day."""
    totals: dict[str, int] = defaultdict(int)
    for day, points in in_lots.items():
        if day is not None and points > 0:
            totals[month_key(max(day, to + timedelta(days=1)))] += points
    return [ExpiringMonth(month, totals[month]) for month in sorted(totals)]


# ---- cohorts -------------------------------------------------------------------------------


@dataclass
class _Evaluation:
    keys: list[str]
    figures: list[CohortFigures]
    expired: list[int]
    estimate: Estimate

    @property
    def expected(self) -> int:
        return self.estimate.expected

    @property
    def rate(self) -> Fraction:
        return self.estimate.rate


def _evaluate(session: Session, program_id: int, spec: Program, day: date) -> _Evaluation:
    """Cohorts by month of earning as they stood at the end of ``day``, and their
    estimate. One grouped query: entries on lots by the lot's month and the entry's."""
    tz = spec.program.tz
    end = local_midnight(day + timedelta(days=1), tz)
    lot, e = PointsLot, PointsEntry
    earliest = (
        session.connection()
        .execute(
            select(func.min(lot.earned_at))
            .join(Member, col(Member.id) == col(lot.member_id))
            .where(col(Member.program_id) == program_id, col(lot.earned_at) < end)
        )
        .scalar_one()
    )
    if earliest is None:
        return _Evaluation([], [], [], estimate([]))
    months = _months(local_date(as_utc(earliest), tz), day)
    bounds = [local_midnight(m, tz) for m in months[1:]]
    rows = (
        select(
            _month_index(col(lot.earned_at), bounds).label("c"),
            _month_index(col(e.at), bounds).label("m"),
            col(e.kind).label("kind"),
            col(e.points).label("points"),
        )
        .select_from(e)
        .join(lot, col(lot.id) == col(e.lot_id))
        .join(Member, col(Member.id) == col(lot.member_id))
        .where(col(Member.program_id) == program_id, col(e.at) < end)
        .subquery()
    )
    grouped = session.connection().execute(
        select(rows.c.c, rows.c.m, rows.c.kind, func.sum(rows.c.points)).group_by(
            rows.c.c, rows.c.m, rows.c.kind
        )
    )
    n = len(months)
    outstanding, expired = [0] * n, [0] * n
    redeemed = [[0] * n for _ in range(n)]  # by cohort, then by age
    for c, m, kind, points in grouped:
        c, m, points = int(c), int(m), int(points or 0)
        outstanding[c] += points
        if kind in ("redeem", "refund"):
            redeemed[c][max(m - c, 0)] -= points
        elif kind == "expire":
            expired[c] -= points
    # The last month counts as observed only when ``day`` is its last day.
    complete = n - 1 if (day + timedelta(days=1)).day == 1 else n - 2
    keys, figures, lost = [], [], []
    for c in range(n):
        gone = sum(redeemed[c])
        issued = outstanding[c] + gone + expired[c]
        if issued == 0 and gone == 0 and expired[c] == 0:
            continue
        developed = []
        running = 0
        for age in range(0, complete - c + 1):
            running += redeemed[c][age]
            developed.append(running)
        keys.append(month_key(months[c]))
        figures.append(CohortFigures(issued, gone, outstanding[c], tuple(developed)))
        lost.append(expired[c])
    return _Evaluation(keys, figures, lost, estimate(figures, tail=_tail(spec)))


def _tail(spec: Program) -> int | None:
    """The age (in months) from which a cohort can no longer redeem: every point of a
    rolling policy has expired by then."""
    if spec.expiry.policy == "rolling" and spec.expiry.months:
        return spec.expiry.months
    return None


def _cohort_rows(ev: _Evaluation) -> list[CohortRow]:
    return [
        CohortRow(
            cohort=key,
            issued=f.issued,
            redeemed=f.redeemed,
            expired=lost,
            outstanding=f.outstanding,
            ultimate_redemption_rate=round(float(est.ultimate_rate), 6),
            expected_redemptions=est.expected,
        )
        for key, f, lost, est in zip(
            ev.keys, ev.figures, ev.expired, ev.estimate.cohorts, strict=True
        )
    ]


# ---- journal -------------------------------------------------------------------------------


def _journal(
    total: RollForward,
    spec: Program,
    day: date,
    rate: Fraction,
    opening: Decimal,
    closing: Decimal,
) -> list[JournalEntry]:
    """The period's entries (IFRS 15 / ASC 606): points issued defer part of the sale,
    redemptions release the liability as revenue, and the re-estimate (returns, expiry,
    adjustments, a changed redemption rate) moves it to the closing estimate. Each
    entry is a balanced debit/credit pair; a negative amount swaps the sides."""
    issued = _money(total.issued * rate, spec)
    redeemed = _money(total.redeemed - total.refunded, spec)
    reestimate = closing - opening - issued + redeemed
    entries: list[JournalEntry] = []

    def pair(amount: Decimal, debit: str, credit: str, memo: str) -> None:
        if amount < 0:
            amount, debit, credit = -amount, credit, debit
        if amount == 0:
            return
        text = _amount(amount, spec)
        entries.append(JournalEntry(day, debit, text, "", memo))
        entries.append(JournalEntry(day, credit, "", text, memo))

    pair(issued, SALES, LIABILITY, f"{total.issued} points issued, deferred at the expected rate")
    pair(redeemed, LIABILITY, REVENUE, f"{total.redeemed - total.refunded} points redeemed, net")
    pair(reestimate, REVENUE, LIABILITY, "re-estimate: returns, expiry, adjustments, breakage")
    return entries


JOURNAL_COLUMNS = ("date", "account", "debit", "credit", "memo")


__all__ = [
    "BUCKETS",
    "JOURNAL_COLUMNS",
    "AgeingBucket",
    "CohortRow",
    "ExpiringMonth",
    "JournalEntry",
    "LiabilityReport",
    "MonthRoll",
    "RollForward",
    "bucket_of",
    "liability",
    "liability_days",
    "month_key",
]
