"""The nightly tier review: downgrades after the hold, undoing bought-and-returned tiers,
catch-up upgrades.

Like the other nightly jobs (services/jobs.py) it records a ``job_run`` per as-of date in
the same transaction as its changes, reads members with a few grouped queries and writes
the new tiers, and their steps of the tier history, with one executemany each.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    Integer,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlmodel import Session
from sqlmodel.sql.sqltypes import UTCDateTime

from loyaltyctl.rules.money import from_minor, to_minor
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.tiers import (
    hold_ends,
    level_index,
    qualified_level,
    review_after_hold,
    window_bounds,
)
from loyaltyctl.rules.timeutil import end_of_local_day, local_midnight
from loyaltyctl.services import events
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.services.jobs import (
    JOB_TIERS,
    _finish_run,
    _latest_start,
    _run_detail,
    _start_run,
    _temp,
    _temp_tables,
)
from loyaltyctl.store.models import metadata

_member = metadata.tables["member"]
_txn = metadata.tables["txn"]
_tier_change = metadata.tables["tier_change"]


@dataclass
class TierChange:
    member: str
    before: str
    after: str
    since: date | None
    why: str


@dataclass
class TierResult:
    program: str
    as_of: date
    members: int
    upgraded: int
    downgraded: int
    requalified: int
    already_done: bool
    dry_run: bool = False
    changes: list[TierChange] = field(default_factory=list)


@dataclass
class _Tiered:
    """A member's tier as read, and as the review leaves it."""

    id: int
    code: str
    tier: str
    since: date | None
    new_tier: str = field(init=False)
    new_since: date | None = field(init=False)
    why: str = ""

    def __post_init__(self) -> None:
        self.new_tier = self.tier
        self.new_since = self.since

    def move(self, tier: str, since: date | None, why: str) -> None:
        self.new_tier, self.new_since, self.why = tier, since, why


def review_tiers(
    session: Session,
    ctx: ProgramContext,
    *,
    as_of: date,
    now: datetime,
    dry_run: bool = False,
) -> TierResult:
    """Re-evaluate tiers as of ``as_of``:

    1. a member whose tier was bought and returned (purchases returned in full took the
       window that earned it below the threshold) goes to the level that window still
       qualifies for, whatever the hold;
    2. a member whose hold ended is requalified on the window ending at ``as_of`` (the
       hold starts again) or moved down: one level, or to the qualified level with
       ``tiers.downgrade = "to-qualified"``;
    3. anyone whose window qualifies for a higher tier is moved up (catch-up).
    """
    run, done = _start_run(session, ctx, JOB_TIERS, as_of, now)
    if done:
        return TierResult(
            ctx.key,
            as_of,
            run.members,
            run.upgraded,
            run.downgraded,
            int(_run_detail(run).get("requalified", 0)),
            True,
            dry_run,
        )
    spec = ctx.version_at(end_of_local_day(as_of, ctx.spec.program.tz)).spec
    seen: dict[int, _Tiered] = {}
    reviewed: set[int] = set()
    if len(spec.tiers.levels) > 1:
        for state, activity in _returned_upgrades(session, ctx, spec, as_of):
            current = seen.setdefault(state.id, state)
            target = qualified_level(spec, activity)
            if level_index(spec, target) < level_index(spec, current.new_tier):
                lowest = target == spec.tier_keys()[0]
                current.move(target, None if lowest else current.new_since, "returned")
                reviewed.add(state.id)
        for state, activity in _holds_ended(session, ctx, spec, as_of):
            current = seen.setdefault(state.id, state)
            if current.new_tier == spec.tier_keys()[0]:
                continue
            reviewed.add(state.id)
            review_after_hold(spec, current, activity, as_of)
        for state, activity in _qualified_above_lowest(session, ctx, spec, as_of):
            current = seen.setdefault(state.id, state)
            target = qualified_level(spec, activity)
            if level_index(spec, target) > level_index(spec, current.new_tier):
                current.move(target, as_of, "qualified")
                reviewed.add(state.id)
    # In id order, like every writer that touches several members.
    changed = sorted(
        (s for s in seen.values() if (s.new_tier, s.new_since) != (s.tier, s.since)),
        key=lambda s: s.id,
    )
    assert run.id is not None
    _apply_tiers(session, changed, now, as_of=as_of, run_id=run.id)
    events.tiers_reviewed(session, ctx.id, run.id, _moves(changed), now)
    up = [s for s in changed if level_index(spec, s.new_tier) > level_index(spec, s.tier)]
    down = [s for s in changed if level_index(spec, s.new_tier) < level_index(spec, s.tier)]
    requalified = len(changed) - len(up) - len(down)
    _finish_run(
        session,
        run,
        now,
        members=len(reviewed),
        upgraded=len(up),
        downgraded=len(down),
        detail={"requalified": requalified},
    )
    return TierResult(
        ctx.key,
        as_of,
        len(reviewed),
        len(up),
        len(down),
        requalified,
        False,
        dry_run,
        changes=[
            TierChange(s.code, s.tier, s.new_tier, s.new_since, s.why)
            for s in sorted(changed, key=lambda s: s.code)
        ],
    )


def _metric_column(spec: Program) -> Any:
    return {
        "points": _txn.c.qual_points,
        "spend": _txn.c.qual_spend_minor,
        "visits": _txn.c.qual_visits,
    }[spec.tiers.metric]


def _activity(spec: Program, raw: Any) -> Decimal:
    value = int(raw or 0)
    if spec.tiers.metric == "spend":
        return from_minor(value, spec.program.minor_digits)
    return Decimal(value)


def _window_utc(spec: Program, as_of: date) -> tuple[datetime, datetime]:
    start, end = window_bounds(spec.tiers, as_of)
    tz = spec.program.tz
    return local_midnight(start, tz), local_midnight(end, tz)


def _holds_ended(
    session: Session, ctx: ProgramContext, spec: Program, as_of: date
) -> Iterator[tuple[_Tiered, Decimal]]:
    """Members above the lowest tier whose hold ended by ``as_of``, with the activity of
    the window ending on ``as_of``: one grouped query."""
    last_since = _latest_start(as_of, lambda day: hold_ends(spec.tiers, day))
    start, end = _window_utc(spec, as_of)
    m, t = _member, _txn
    rows = session.execute(
        select(m.c.id, m.c.code, m.c.tier, m.c.tier_since, func.sum(_metric_column(spec)))
        .select_from(
            m.outerjoin(t, and_(t.c.member_id == m.c.id, t.c.qual_at >= start, t.c.qual_at < end))
        )
        .where(
            m.c.program_id == ctx.id,
            m.c.tier != spec.tier_keys()[0],
            or_(m.c.tier_since.is_(None), m.c.tier_since <= last_since),
        )
        .group_by(m.c.id, m.c.code, m.c.tier, m.c.tier_since)
        .order_by(m.c.id)
    )
    for row in rows:
        yield _Tiered(row[0], row[1], row[2], row[3]), _activity(spec, row[4])


def _qualified_above_lowest(
    session: Session, ctx: ProgramContext, spec: Program, as_of: date
) -> Iterator[tuple[_Tiered, Decimal]]:
    """Members whose window ending on ``as_of`` reaches the second level: one grouped query."""
    start, end = _window_utc(spec, as_of)
    threshold = spec.tiers.levels[1].min
    if spec.tiers.metric == "spend":
        threshold = Decimal(to_minor(threshold, spec.program.minor_digits))
    m, t = _member, _txn
    total = func.sum(_metric_column(spec))
    rows = session.execute(
        select(m.c.id, m.c.code, m.c.tier, m.c.tier_since, total)
        .select_from(m.join(t, t.c.member_id == m.c.id))
        .where(m.c.program_id == ctx.id, t.c.qual_at >= start, t.c.qual_at < end)
        .group_by(m.c.id, m.c.code, m.c.tier, m.c.tier_since)
        .having(total >= int(threshold))
        .order_by(m.c.id)
    )
    for row in rows:
        yield _Tiered(row[0], row[1], row[2], row[3]), _activity(spec, row[4])


def _returned_upgrades(
    session: Session, ctx: ProgramContext, spec: Program, as_of: date
) -> Iterator[tuple[_Tiered, Decimal]]:
    """Members above the lowest tier with a return dated (at its purchase) inside the
    window that earned their tier, with the best activity that still backs the tier: that
    window without the purchases returned in full, or the window ending on ``as_of``
    (within the same calendar year for calendar-year programs) when later purchases
    requalify them."""
    m, t = _member, _txn
    lowest = spec.tier_keys()[0]
    sinces = [
        row[0]
        for row in session.execute(
            select(m.c.tier_since)
            .where(m.c.program_id == ctx.id, m.c.tier != lowest, m.c.tier_since.is_not(None))
            .distinct()
        )
    ]
    if not sinces:
        return
    windows = _temp(
        "job_tier_window",
        Column("since", Date, primary_key=True),
        Column("earned_start", UTCDateTime(), nullable=False),
        Column("earned_end", UTCDateTime(), nullable=False),
        Column("now_start", UTCDateTime(), nullable=False),
        Column("now_end", UTCDateTime(), nullable=False),
    )
    rows_in: list[dict[str, Any]] = []
    for since in sinces:
        earned_start, earned_end = _window_utc(spec, since)
        later = as_of
        if spec.tiers.window == "calendar-year":
            later = min(as_of, date(since.year, 12, 31))
        now_start, now_end = _window_utc(spec, max(later, since))
        rows_in.append(
            {
                "since": since,
                "earned_start": earned_start,
                "earned_end": earned_end,
                "now_start": now_start,
                "now_end": now_end,
            }
        )
    w = windows
    metric = _metric_column(spec)
    r = _txn.alias("r")
    with _temp_tables(session, windows):
        session.execute(insert(windows), rows_in)
        in_earned = and_(t.c.qual_at >= w.c.earned_start, t.c.qual_at < w.c.earned_end)
        in_now = and_(t.c.qual_at >= w.c.now_start, t.c.qual_at < w.c.now_end)
        returned = exists(
            select(r.c.id).where(
                r.c.member_id == m.c.id,
                r.c.kind == "return",
                r.c.qual_at >= w.c.earned_start,
                r.c.qual_at < w.c.earned_end,
            )
        )
        # Only a purchase returned in full unbuys the tier it earned (its last return
        # takes the visit back); a partial return lowers activity from now on but does
        # not undo an upgrade within its hold (the worked example M1 of docs/ledger.md).
        full = (
            select(r.c.original_id.label("original_id"))
            .where(r.c.kind == "return", r.c.qual_visits < 0)
            .subquery("full_return")
        )
        backing = and_(in_earned, t.c.kind != "return", full.c.original_id.is_(None))
        rows = session.execute(
            select(
                m.c.id,
                m.c.code,
                m.c.tier,
                m.c.tier_since,
                func.sum(case((backing, metric), else_=0)),
                func.sum(case((in_now, metric), else_=0)),
            )
            .select_from(
                m.join(w, w.c.since == m.c.tier_since)
                .join(
                    t,
                    and_(
                        t.c.member_id == m.c.id,
                        t.c.qual_at >= w.c.earned_start,
                        t.c.qual_at < w.c.now_end,
                    ),
                )
                .outerjoin(full, full.c.original_id == t.c.id)
            )
            .where(m.c.program_id == ctx.id, m.c.tier != lowest, returned)
            .group_by(m.c.id, m.c.code, m.c.tier, m.c.tier_since)
            .order_by(m.c.id)
        ).all()
    for row in rows:
        best = max(_activity(spec, row[4]), _activity(spec, row[5]))
        yield _Tiered(row[0], row[1], row[2], row[3]), best


def _apply_tiers(
    session: Session, changed: list[_Tiered], now: datetime, *, as_of: date, run_id: int
) -> None:
    """Write the new tiers and their history steps (dated the as-of day, tied to the
    run); a member whose tier moved meanwhile (a purchase upgraded it while the review
    ran) is left alone: the next review sees it. A requalification (same tier, the hold
    starts again) is a step too, so a past day's hold can be read back."""
    if not changed:
        return
    m = _member
    unchanged = and_(
        m.c.id == bindparam("b_id"),
        m.c.tier == bindparam("b_tier"),
        m.c.tier_since.is_not_distinct_from(bindparam("b_since", type_=Date)),
    )
    record = insert(_tier_change).from_select(
        ["member_id", "tier", "effective_on", "reason", "recorded_at", "job_run_id"],
        select(
            m.c.id,
            bindparam("b_new_tier", type_=_tier_change.c.tier.type),
            literal(as_of, Date),
            literal("review"),
            literal(now, UTCDateTime()),
            literal(run_id, Integer),
        ).where(unchanged),
    )
    stmt = (
        update(m)
        .where(unchanged)
        .values(
            tier=bindparam("b_new_tier"),
            tier_since=bindparam("b_new_since", type_=Date),
            updated_at=now,
        )
    )
    params = [
        {
            "b_id": s.id,
            "b_tier": s.tier,
            "b_since": s.since,
            "b_new_tier": s.new_tier,
            "b_new_since": s.new_since,
        }
        for s in changed
    ]
    # The step first: the update's guard would no longer match afterwards.
    keys = ("b_id", "b_tier", "b_since", "b_new_tier")
    session.execute(record, [{k: p[k] for k in keys} for p in params])
    session.execute(stmt, params)


def _moves(changed: list[_Tiered]) -> list[tuple[str, str, str]]:
    return [(s.code, s.tier, s.new_tier) for s in changed]
