"""Member statements: what a member sees of the program for a period.

A statement places every entry by its effective time (``at``) in the program's time zone:
the lines of a period [S, E) are the entries effective in it, so

- opening = entries effective before S, closing = entries effective before E, and
  opening + lines = closing, always;
- a statement of a period that has ended never changes when later activity arrives;
- history loaded or posted later with a past date (``--at``, imports of old sales) lands
  in the period it belongs to, so statements of migrated history are complete — but such
  a line is flagged ``backdated`` (recorded after the period ended), so a statement that
  changed because of it says so instead of being rewritten silently.

Everything else on a statement (tier, progress, expiring points, live vouchers, program
name) is computed as of the same moment, so it is just as stable. Bulk statements build
members in batches with a handful of set-based queries per batch: a single statement is
a batch of one, so both paths give the same documents.
"""

from __future__ import annotations

import calendar
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, not_, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.expiry import inactivity_due
from loyaltyctl.rules.money import format_amount, from_minor
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.tiers import hold_ends, hold_start, tier_at, window_bounds
from loyaltyctl.rules.timeutil import as_utc, local_date, local_midnight
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.ledger import find_member
from loyaltyctl.services.statement_text import describe, promotions_of
from loyaltyctl.services.tiering import tier_histories
from loyaltyctl.store.models import JobRun, Member, PointsEntry, PointsLot, Txn, Voucher

EXPIRING_DAYS = 90
DEFAULT_BATCH = 500

# Entry kind → the statement's total it adds to; totals are signed, so
# opening + sum(totals) = closing.
TOTAL_OF_KIND = {
    "earn": "earned",
    "bonus": "bonus",
    "redeem": "redeemed",
    "expire": "expired",
    "clawback": "returned",
    "adjust": "adjusted",
    "refund": "refunded",
}

_MONTH_RE = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True)
class Period:
    """Program-local calendar days ``first``..``last`` (inclusive) and the UTC instants
    [start, end) they cover."""

    first: date
    last: date
    start: datetime
    end: datetime


@dataclass
class StatementLine:
    at: datetime
    date: date
    ref: str
    kind: str
    description: str
    points: int
    balance: int
    recorded_at: datetime
    backdated: bool
    # The shop or till of a purchase, return or adjustment, when given.
    store: str | None = None


@dataclass
class ExpiringPoints:
    date: date
    points: int


@dataclass
class LiveVoucher:
    code: str
    reward: str
    name: str
    points: int
    issued_at: datetime
    expires_at: datetime


@dataclass
class TierProgress:
    metric: str
    window_from: date
    window_to: date
    activity: str
    next_tier: str | None
    next_tier_name: str | None
    next_min: str | None
    needed: str | None


@dataclass
class Branding:
    display_name: str
    primary_color: str
    accent_color: str
    logo_text: str | None


@dataclass
class Statement:
    member: str
    name: str | None
    program: str
    program_name: str
    currency: str
    timezone: str
    first: date
    last: date
    opening_balance: int
    lines: list[StatementLine]
    totals: dict[str, int]
    closing_balance: int
    tier: str
    tier_name: str
    hold_until: date | None
    progress: TierProgress
    expiring: list[ExpiringPoints]
    vouchers: list[LiveVoucher]
    branding: Branding
    member_id: int = field(default=0, repr=False)


# ---- periods ----------------------------------------------------------------------------


def period_of(first: date, last: date, program: Program) -> Period:
    if first > last:
        raise InvalidInput(
            f"--from {first} is after --to {last}",
            hint="give the first and last day, e.g. --from 2026-10-01 --to 2026-10-31",
        )
    tz = program.program.tz
    return Period(
        first, last, local_midnight(first, tz), local_midnight(last + timedelta(days=1), tz)
    )


def month_days(text: str) -> tuple[date, date]:
    """``2026-10`` → the first and last day of that month."""
    match = _MONTH_RE.fullmatch(text.strip())
    if not match or not 1 <= int(match[2]) <= 12:
        raise InvalidInput(f"--period {text!r} is not a month", hint="write e.g. --period 2026-10")
    year, month = int(match[1]), int(match[2])
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


def spec_at(ctx: ProgramContext, moment: datetime) -> Program:
    """The program version in force just before ``moment`` (a period's exclusive end)."""
    return ctx.version_at(moment - timedelta(microseconds=1)).spec


def statement_period(ctx: ProgramContext, first: date, last: date) -> tuple[Period, Program]:
    """The period in the zone of the version in force at its end, and that version."""
    rough = period_of(first, last, ctx.spec)
    spec = spec_at(ctx, rough.end)
    return period_of(first, last, spec), spec


# ---- "known at" -----------------------------------------------------------------------


def entry_known(moment: datetime) -> ColumnElement[bool]:
    """An entry is part of the picture at ``moment`` once it is effective."""
    return col(PointsEntry.at) < moment


def txn_known(moment: datetime) -> ColumnElement[bool]:
    return col(Txn.occurred_at) < moment


def tiers_at(
    session: Session,
    member_ids: Sequence[int],
    *,
    moment: datetime,
    tz: Any,
    lowest: str,
) -> dict[int, tuple[str, date | None]]:
    """Tier and tier-since date (the start of its hold) of each member on the local day
    that ``moment`` ends, from the tier history: enrolment, upgrades, reviews. Members
    without a step by then are at ``lowest``."""
    day = local_date(moment - timedelta(microseconds=1), tz)
    found: dict[int, tuple[str, date | None]] = {}
    for member_id, history in tier_histories(session, member_ids).items():
        step = tier_at(history, day)
        tier = step.tier if step is not None else lowest
        found[member_id] = (tier, hold_start(history, day, lowest))
    return found


# ---- building ----------------------------------------------------------------------------


@dataclass
class _View:
    """What every statement of one run shares."""

    ctx: ProgramContext
    spec: Program
    period: Period
    now: datetime

    @property
    def moment(self) -> datetime:
        """The instant the non-ledger facts (tier, vouchers) are taken at: the end of the
        period, or now while the period is still running."""
        return min(self.period.end, self.now)

    @property
    def closed(self) -> bool:
        return self.period.end <= self.now


def statement_for(
    session: Session,
    ctx: ProgramContext,
    code: str,
    *,
    first: date,
    last: date,
    now: datetime,
) -> Statement:
    member = find_member(session, ctx.id, code)
    period, spec = statement_period(ctx, first, last)
    view = _View(ctx, spec, period, as_utc(now))
    return _build_batch(session, view, [member])[0]


def count_members(session: Session, ctx: ProgramContext) -> int:
    return int(
        session.connection()
        .execute(select(func.count()).select_from(Member).where(col(Member.program_id) == ctx.id))
        .scalar_one()
    )


def iter_statements(
    session: Session,
    ctx: ProgramContext,
    *,
    first: date,
    last: date,
    now: datetime,
    only_active: bool = False,
    batch_size: int = DEFAULT_BATCH,
) -> Iterator[tuple[int, Statement | None]]:
    """Every member's statement, in member id order, a batch at a time so memory stays
    flat. Yields ``(members done so far, statement)``; with ``only_active`` a member
    without movements in the period yields None (for progress) instead of a statement."""
    period, spec = statement_period(ctx, first, last)
    view = _View(ctx, spec, period, as_utc(now))
    after = 0
    done = 0
    while True:
        members = list(
            session.connection().execute(
                select(
                    col(Member.id),
                    col(Member.code),
                    col(Member.name),
                    col(Member.tier),
                    col(Member.tier_since),
                    col(Member.enrolled_at),
                )
                .where(col(Member.program_id) == ctx.id, col(Member.id) > after)
                .order_by(col(Member.id))
                .limit(batch_size)
            )
        )
        if not members:
            return
        after = members[-1].id
        for statement in _build_batch(session, view, members):
            done += 1
            yield done, (None if only_active and not statement.lines else statement)


def _build_batch(session: Session, view: _View, members: Sequence[Any]) -> list[Statement]:
    """Statements of ``members`` (Member rows or objects: id, code, name, tier,
    tier_since, enrolled_at)."""
    ids = [m.id for m in members if m.id is not None]
    spec = view.spec
    tz = spec.program.tz
    lowest = spec.tiers.levels[0].key
    openings = _opening_balances(session, ids, view.period.start)
    lines = _lines(session, view, ids)
    if view.closed:
        tiers = tiers_at(session, ids, moment=view.moment, tz=tz, lowest=lowest)
    else:
        tiers = {m.id or 0: (m.tier, m.tier_since) for m in members}
    activity = _window_activity(session, view, ids)
    lots = _expiring_lots(session, view, ids)
    last_purchases = _last_purchases(session, view, ids) if _inactivity(spec) else {}
    vouchers = _live_vouchers(session, view, ids)
    branding = _branding(spec)
    result = []
    for member in members:
        assert member.id is not None
        opening = openings.get(member.id, 0)
        member_lines = _running(lines.get(member.id, []), opening, tz)
        closing = member_lines[-1].balance if member_lines else opening
        tier, since = tiers[member.id]
        if _inactivity(spec):
            last = last_purchases.get(member.id) or member.enrolled_at
            expiring = _inactivity_expiring(spec, view, last, closing)
        else:
            expiring = lots.get(member.id, [])
        result.append(
            Statement(
                member=member.code,
                name=member.name,
                program=view.ctx.key,
                program_name=branding.display_name,
                currency=spec.program.currency,
                timezone=spec.program.timezone,
                first=view.period.first,
                last=view.period.last,
                opening_balance=opening,
                lines=member_lines,
                totals=_totals(member_lines),
                closing_balance=closing,
                tier=tier,
                tier_name=_tier_name(spec, tier),
                hold_until=_hold_until(spec, tier, since),
                progress=_progress(spec, view, tier, activity.get(member.id, 0)),
                expiring=expiring,
                vouchers=vouchers.get(member.id, []),
                branding=branding,
                member_id=member.id,
            )
        )
    return result


def _opening_balances(session: Session, ids: Sequence[int], start: datetime) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.connection().execute(
        select(col(PointsEntry.member_id), func.sum(PointsEntry.points))
        .where(col(PointsEntry.member_id).in_(ids), entry_known(start))
        .group_by(col(PointsEntry.member_id))
    )
    return {member_id: int(total) for member_id, total in rows}


@dataclass
class _RawLine:
    at: datetime
    ref: str
    kind: str
    description: str
    points: int
    recorded_at: datetime
    backdated: bool
    store: str | None = None


def _lines(session: Session, view: _View, ids: Sequence[int]) -> dict[int, list[_RawLine]]:
    """One line per transaction or job run (and kind): a purchase that settles a debt
    writes two entries but is one movement for the member."""
    if not ids:
        return {}
    period = view.period
    entry = PointsEntry
    grouped = (
        select(
            col(entry.member_id).label("member_id"),
            col(entry.txn_id).label("txn_id"),
            col(entry.job_run_id).label("job_run_id"),
            col(entry.kind).label("kind"),
            func.sum(entry.points).label("points"),
            func.min(entry.at).label("at"),
            func.max(entry.recorded_at).label("recorded_at"),
            func.min(entry.id).label("first_id"),
        )
        .where(
            col(entry.member_id).in_(ids),
            entry_known(period.end),
            not_(entry_known(period.start)),
        )
        .group_by(col(entry.member_id), col(entry.txn_id), col(entry.job_run_id), col(entry.kind))
        .subquery()
    )
    original = aliased(Txn)
    voucher = aliased(Voucher)
    cancelled = aliased(Voucher)
    stmt = (
        select(
            grouped,
            col(Txn.ref),
            col(Txn.kind).label("txn_kind"),
            col(Txn.amount_minor),
            col(Txn.reason),
            col(original.ref).label("original_ref"),
            col(JobRun.job),
            col(JobRun.as_of),
            col(voucher.code).label("voucher_code"),
            col(voucher.reward_name).label("reward_name"),
            col(cancelled.code).label("cancelled_code"),
            col(Txn.store),
            col(Txn.payload),
            col(Txn.program_version_id),
        )
        .select_from(grouped)
        .outerjoin(Txn, col(Txn.id) == grouped.c.txn_id)
        .outerjoin(original, col(original.id) == col(Txn.original_id))
        .outerjoin(JobRun, col(JobRun.id) == grouped.c.job_run_id)
        .outerjoin(voucher, col(voucher.txn_id) == grouped.c.txn_id)
        .outerjoin(cancelled, col(cancelled.cancel_txn_id) == grouped.c.txn_id)
        .order_by(grouped.c.member_id, grouped.c.at, grouped.c.first_id)
    )
    digits = view.spec.program.minor_digits
    currency = view.spec.program.currency
    found: dict[int, list[_RawLine]] = defaultdict(list)
    for row in session.connection().execute(stmt):
        at = as_utc(row.at)
        if row.txn_id is not None:
            ref = row.ref
        else:
            ref = f"{row.job}:{row.as_of.isoformat()}" if row.job else f"job:{row.job_run_id}"
        found[row.member_id].append(
            _RawLine(
                at=at,
                ref=ref,
                kind=row.kind,
                description=describe(row, digits, currency, promotions_of(view.ctx, row, at)),
                points=int(row.points),
                recorded_at=as_utc(row.recorded_at),
                backdated=as_utc(row.recorded_at) >= period.end,
                store=row.store,
            )
        )
    return found


def _running(raw: Sequence[_RawLine], opening: int, tz: Any) -> list[StatementLine]:
    balance = opening
    lines = []
    for line in raw:
        balance += line.points
        lines.append(
            StatementLine(
                at=line.at,
                date=local_date(line.at, tz),
                ref=line.ref,
                kind=line.kind,
                description=line.description,
                points=line.points,
                balance=balance,
                recorded_at=line.recorded_at,
                backdated=line.backdated,
                store=line.store,
            )
        )
    return lines


def _totals(lines: Sequence[StatementLine]) -> dict[str, int]:
    totals = dict.fromkeys(TOTAL_OF_KIND.values(), 0)
    for line in lines:
        key = TOTAL_OF_KIND.get(line.kind, line.kind)
        totals[key] = totals.get(key, 0) + line.points
    return totals


def _tier_name(spec: Program, key: str) -> str:
    for level in spec.tiers.levels:
        if level.key == key:
            return level.name
    return key


def _hold_until(spec: Program, tier: str, since: date | None) -> date | None:
    if since is None or tier == spec.tiers.levels[0].key:
        return None
    return hold_ends(spec.tiers, since)


def _window_activity(session: Session, view: _View, ids: Sequence[int]) -> dict[int, int]:
    """Qualifying activity in the tier window ending on the period's last day, from the
    transactions known at its end; in the metric's stored unit (minor units for spend)."""
    if not ids:
        return {}
    spec = view.spec
    tz = spec.program.tz
    start, end = window_bounds(spec.tiers, view.period.last)
    column = {
        "points": Txn.qual_points,
        "spend": Txn.qual_spend_minor,
        "visits": Txn.qual_visits,
    }[spec.tiers.metric]
    rows = session.connection().execute(
        select(col(Txn.member_id), func.sum(column))
        .where(
            col(Txn.member_id).in_(ids),
            col(Txn.occurred_at) < view.period.end,
            col(Txn.qual_at) >= local_midnight(start, tz),
            col(Txn.qual_at) < local_midnight(end, tz),
        )
        .group_by(col(Txn.member_id))
    )
    return {member_id: int(total) for member_id, total in rows}


def _progress(spec: Program, view: _View, tier: str, stored: int) -> TierProgress:
    start, end = window_bounds(spec.tiers, view.period.last)
    metric = spec.tiers.metric
    digits = spec.program.minor_digits
    activity = from_minor(stored, digits) if metric == "spend" else Decimal(stored)
    keys = spec.tier_keys()
    index = keys.index(tier) if tier in keys else 0
    following = spec.tiers.levels[index + 1] if index + 1 < len(keys) else None

    def shown(value: Decimal) -> str:
        return format_amount(value, digits) if metric == "spend" else str(int(value))

    return TierProgress(
        metric=metric,
        window_from=start,
        window_to=end - timedelta(days=1),
        activity=shown(activity),
        next_tier=following.key if following else None,
        next_tier_name=following.name if following else None,
        next_min=shown(following.min) if following else None,
        needed=shown(max(Decimal(0), following.min - activity)) if following else None,
    )


def _inactivity(spec: Program) -> bool:
    return spec.expiry.policy == "inactivity"


def _expiring_lots(
    session: Session, view: _View, ids: Sequence[int]
) -> dict[int, list[ExpiringPoints]]:
    """Points left at the period's end in lots due within 90 days after its last day (a
    lot already due but not yet taken by an expiry run is listed with its date)."""
    if not ids or view.spec.expiry.policy not in ("rolling", "fixed_date"):
        return {}
    horizon = view.period.last + timedelta(days=EXPIRING_DAYS)
    rows = session.connection().execute(
        select(col(PointsEntry.member_id), col(PointsLot.expires_on), func.sum(PointsEntry.points))
        .join(PointsLot, col(PointsLot.id) == col(PointsEntry.lot_id))
        .where(
            col(PointsEntry.member_id).in_(ids),
            entry_known(view.period.end),
            col(PointsLot.expires_on).is_not(None),
            col(PointsLot.expires_on) <= horizon,
        )
        .group_by(col(PointsEntry.member_id), col(PointsLot.expires_on))
        .having(func.sum(PointsEntry.points) > 0)
        .order_by(col(PointsEntry.member_id), col(PointsLot.expires_on))
    )
    found: dict[int, list[ExpiringPoints]] = defaultdict(list)
    for member_id, day, points in rows:
        if day is not None:
            found[member_id].append(ExpiringPoints(day, int(points)))
    return found


def _last_purchases(session: Session, view: _View, ids: Sequence[int]) -> dict[int, datetime]:
    if not ids:
        return {}
    rows = session.connection().execute(
        select(col(Txn.member_id), func.max(Txn.occurred_at))
        .where(
            col(Txn.member_id).in_(ids),
            col(Txn.kind) == "purchase",
            txn_known(view.period.end),
        )
        .group_by(col(Txn.member_id))
    )
    return {member_id: as_utc(at) for member_id, at in rows}


def _inactivity_expiring(
    spec: Program, view: _View, last: datetime, closing: int
) -> list[ExpiringPoints]:
    due = inactivity_due(spec.expiry, local_date(last, spec.program.tz))
    horizon = view.period.last + timedelta(days=EXPIRING_DAYS)
    if due is None or closing <= 0 or due > horizon:
        return []
    return [ExpiringPoints(due, closing)]


def _live_vouchers(
    session: Session, view: _View, ids: Sequence[int]
) -> dict[int, list[LiveVoucher]]:
    """Vouchers issued and neither used, cancelled nor past their date at the moment the
    statement is taken; judged by timestamps, not by the current status, so a statement
    of an ended period does not change when a voucher is used later."""
    if not ids:
        return {}
    moment = view.moment
    rows = session.connection().execute(
        select(
            col(Voucher.member_id),
            col(Voucher.code),
            col(Voucher.reward_key),
            col(Voucher.reward_name),
            col(Voucher.points),
            col(Voucher.issued_at),
            col(Voucher.expires_at),
        )
        .join(Txn, col(Txn.id) == col(Voucher.txn_id))
        .where(
            col(Voucher.member_id).in_(ids),
            col(Voucher.issued_at) <= moment,
            col(Voucher.expires_at) > moment,
            or_(col(Voucher.used_at).is_(None), col(Voucher.used_at) > moment),
            or_(col(Voucher.cancelled_at).is_(None), col(Voucher.cancelled_at) > moment),
        )
        .order_by(col(Voucher.member_id), col(Voucher.expires_at), col(Voucher.id))
    )
    found: dict[int, list[LiveVoucher]] = defaultdict(list)
    for member_id, code, key, name, points, issued, expires in rows:
        found[member_id].append(
            LiveVoucher(code, key, name, int(points), as_utc(issued), as_utc(expires))
        )
    return found


def _branding(spec: Program) -> Branding:
    given = spec.branding
    if given is None:
        from loyaltyctl.rules.program import Branding as Defaults

        given = Defaults()
    return Branding(
        display_name=given.display_name or spec.program.name,
        primary_color=given.primary_color,
        accent_color=given.accent_color,
        logo_text=given.logo_text,
    )
