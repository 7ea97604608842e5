"""``program simulate``: a program file tried on the recorded history before it ships.

The history (enrolments, opening balances, purchases with their lines, returns,
adjustments, redemptions, voucher cancellations, and the days the nightly expiry and tier
review ran) is read in one read transaction, streamed in the order it happened, and
replayed through the posting core in memory (``ledger.replay``) with FILE in force from
``first`` and the recorded versions before it. Nothing is written to the database. The
result sets the summary report's figures at the end of ``last`` for the real ledger
beside the same figures for the simulated one (``reports.flows_of`` and
``reports.liability_of``: one definition for both).
"""

from __future__ import annotations

import csv
import heapq
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select
from sqlmodel import Session

from loyaltyctl.errors import InvalidInput
from loyaltyctl.ledger.kernel import OPENING_REASON, opening_ref
from loyaltyctl.ledger.replay import Replay
from loyaltyctl.ledger.requests import TxnRow
from loyaltyctl.rules.earning import Line
from loyaltyctl.rules.money import format_amount
from loyaltyctl.rules.program import Program, Reward
from loyaltyctl.rules.timeutil import as_utc, local_date, local_midnight
from loyaltyctl.rules.versions import ProgramContext, VersionInfo
from loyaltyctl.services.context import load_context
from loyaltyctl.services.files import atomic_file
from loyaltyctl.services.jobs import JOB_EXPIRE, JOB_TIERS
from loyaltyctl.services.reports import _balances, flows_of, liability_of, rate, summary
from loyaltyctl.services.statements import spec_at
from loyaltyctl.store.models import metadata

_member = metadata.tables["member"]
_txn = metadata.tables["txn"]
_voucher = metadata.tables["voucher"]
_job_run = metadata.tables["job_run"]
_entry = metadata.tables["points_entry"]
_tier_change = metadata.tables["tier_change"]

STREAM_ROWS = 5_000
CHART_MONTHS = 24
FIGURES = (
    "points_issued",
    "points_redeemed",
    "points_expired",
    "points_outstanding",
    "liability",
    "redemption_rate",
    "breakage_rate",
)
MEMBER_COLUMNS = ["member", "actual_balance", "simulated_balance", "actual_tier", "simulated_tier"]


@dataclass
class Figures:
    points_issued: int
    points_redeemed: int
    points_expired: int
    points_outstanding: int
    liability: str
    redemption_rate: float
    breakage_rate: float
    tiers: dict[str, int]


@dataclass
class MonthPoint:
    month: str
    actual_liability: str
    simulated_liability: str


@dataclass
class SimulationResult:
    program: str
    first: datetime
    from_: str
    to: date
    actual: Figures
    simulated: Figures
    delta: dict[str, Any]
    tier_moves: list[dict[str, Any]]
    members_changed: int
    redemptions_refused: int
    cancellations_skipped: int
    refused: dict[str, int]
    events: int
    currency: str
    monthly: list[MonthPoint] = field(default_factory=list)
    members_out: str | None = None


# ---- the context FILE is tried in -----------------------------------------------------------


def simulated_context(ctx: ProgramContext, spec: Program, first: datetime) -> ProgramContext:
    """The recorded versions in force before ``first`` (the first one always: it covers
    history from before it was loaded), then ``spec`` loaded at ``first``."""
    if spec.program.key != ctx.key:
        raise InvalidInput(
            f"the file is program {spec.program.key}, not {ctx.key}",
            hint="simulate a version of the loaded program (same [program] key)",
        )
    if spec.program.currency != ctx.spec.program.currency:
        raise InvalidInput(
            f"the file changes the currency ({ctx.spec.program.currency} → "
            f"{spec.program.currency}): the recorded amounts cannot be replayed in it",
            hint="keep the program's currency",
        )
    kept = [
        info
        for i, info in enumerate(ctx.versions)
        if i == 0 or as_utc(info.loaded_at) < as_utc(first)
    ]
    trial = VersionInfo(
        id=-1,
        version=ctx.latest.version + 1,
        loaded_at=first,
        spec_json=spec.model_dump_json(by_alias=True),
        _spec=spec,
    )
    return ProgramContext(id=ctx.id, key=ctx.key, versions=[*kept, trial])


# ---- reading the history ------------------------------------------------------------------


def _stream(session: Session, stmt: Any) -> Iterator[Any]:
    """Rows through a server-side cursor (PostgreSQL) in chunks: the history is never
    held whole."""
    conn = session.connection().execution_options(stream_results=True, yield_per=STREAM_ROWS)
    yield from conn.execute(stmt)


def _ids(session: Session, program_id: int, kind: str, before: datetime) -> set[int]:
    """Ids of the transactions that a later ``kind`` row (return, refund) names."""
    t = _txn
    rows = session.connection().execute(
        select(t.c.original_id)
        .where(
            t.c.program_id == program_id,
            t.c.kind == kind,
            t.c.occurred_at < before,
            t.c.original_id.is_not(None),
        )
        .distinct()
    )
    return {int(r[0]) for r in rows}


def _events(
    session: Session, ctx: ProgramContext, tz: Any, last_day: date, end: datetime
) -> Iterator[tuple[Any, ...]]:
    """(moment, order, id, kind, row) in the order things happened: enrolments and
    transactions by time and id, and each nightly run where ``_job_place`` puts it."""
    m, t, v, o, j = _member, _txn, _voucher, _txn.alias("o"), _job_run
    runs = (
        session.connection()
        .execute(
            select(j.c.id, j.c.job, j.c.as_of, j.c.started_at)
            .where(
                j.c.program_id == ctx.id,
                j.c.status == "done",
                j.c.job.in_((JOB_EXPIRE, JOB_TIERS)),
                j.c.as_of <= last_day,
            )
            .order_by(j.c.as_of, j.c.id)
        )
        .all()
    )
    jobs = sorted(
        (*_job_place(session, ctx.id, as_of, started_at, tz), run_id, job, as_of)
        for run_id, job, as_of, started_at in runs
    )
    members = (
        (as_utc(at), 1, member_id, "enrol", code)
        for member_id, code, at in _stream(
            session,
            select(m.c.id, m.c.code, m.c.enrolled_at)
            .where(m.c.program_id == ctx.id, m.c.enrolled_at < end)
            .order_by(m.c.enrolled_at, m.c.id),
        )
    )
    txns = (
        (as_utc(row.occurred_at), 2, row.id, "txn", row)
        for row in _stream(
            session,
            select(
                t.c.id,
                t.c.kind,
                t.c.ref,
                t.c.occurred_at,
                t.c.payload,
                t.c.reason,
                t.c.original_id,
                m.c.code,
                o.c.ref.label("original_ref"),
                v.c.code.label("voucher"),
                v.c.reward_key,
                v.c.reward_name,
                v.c.points.label("voucher_points"),
                v.c.issued_at,
                v.c.expires_at,
            )
            .select_from(
                t.join(m, m.c.id == t.c.member_id)
                .outerjoin(o, o.c.id == t.c.original_id)
                .outerjoin(v, v.c.txn_id == t.c.id)
            )
            .where(t.c.program_id == ctx.id, t.c.occurred_at < end)
            .order_by(t.c.occurred_at, t.c.id),
        )
    )
    # Enrolments before transactions of the same moment: a member exists before it buys.
    yield from heapq.merge(jobs, members, txns, key=lambda e: (e[0], e[1], e[2]))


def _job_place(
    session: Session, program_id: int, as_of: date, started_at: datetime, tz: Any
) -> tuple[datetime, int]:
    """Where a nightly run goes in the history: at the start of its day, or just after
    the last transaction of that day recorded before the run started (cron runs the jobs
    for today early in the day; a day's sales before the run were in the ledger it saw)."""
    start = local_midnight(as_of, tz)
    t = _txn
    seen = (
        session.connection()
        .execute(
            select(func.max(t.c.occurred_at)).where(
                t.c.program_id == program_id,
                t.c.occurred_at >= start,
                t.c.occurred_at < local_midnight(as_of + timedelta(days=1), tz),
                t.c.recorded_at <= started_at,
            )
        )
        .scalar()
    )
    return (start, 0) if seen is None else (as_utc(seen), 3)


def _txn_row(replay: Replay, row: Any) -> TxnRow:
    payload = json.loads(row.payload)
    when = as_utc(row.occurred_at)
    rules = replay.book.at(when)
    out = TxnRow(None, row.kind, row.code, row.ref, when, when, rules, local_date(when, rules.tz))
    if row.kind == "purchase":
        lines = [Line(cat, Decimal(amount)) for cat, amount in payload["lines"]]
        out.amount = sum((line.amount for line in lines), Decimal(0))
        if len(lines) == 1:
            out.category = lines[0].category
        else:
            out.lines = tuple(lines)
    elif row.kind == "return":
        out.amount = Decimal(payload["amount"])
        out.original = row.original_ref
    else:
        out.points = int(payload["points"])
        out.reason = payload["reason"]
    return out


def _reward(replay: Replay, recorded: ProgramContext, row: Any, when: datetime) -> Reward | None:
    """The reward as the rules in force say; one they no longer have keeps the terms it
    was redeemed under (what customers took does not change with the rules)."""
    found = replay.book.at(when).spec.reward(row.reward_key)
    if found is None:
        found = recorded.version_at(when).spec.reward(row.reward_key)
    return found


# ---- the simulation -------------------------------------------------------------------------


def simulate(
    session: Session,
    spec: Program,
    *,
    first: datetime | None,
    last: date | None,
    now: datetime,
    members_out: Path | None = None,
) -> SimulationResult:
    """Replay the program's history under ``spec`` from ``first`` (default: the first
    enrolment or transaction) to the end of ``last`` (default: today); writes nothing."""
    if session.get_bind().dialect.name == "postgresql":
        # One snapshot for every query of the run.
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    ctx = load_context(session, spec.program.key)
    tz = ctx.spec.program.tz
    last = last or local_date(now, tz)
    end = local_midnight(last + timedelta(days=1), tz)
    given = first
    if first is None:
        # The first thing that happened: an enrolment (its signup bonus is FILE's too)
        # or a transaction.
        conn = session.connection()
        starts = [
            conn.execute(select(func.min(column)).where(table.c.program_id == ctx.id)).scalar()
            for table, column in ((_txn, _txn.c.occurred_at), (_member, _member.c.enrolled_at))
        ]
        found = [as_utc(value) for value in starts if value is not None]
        first = min(found) if found else local_midnight(last, tz)
    if first >= end:
        raise InvalidInput(f"--from {local_date(first, tz)} is after --to {last}")
    sim_ctx = simulated_context(ctx, spec, first)
    replay = Replay(
        sim_ctx,
        now,
        keep_purchases=_ids(session, ctx.id, "return", end),
        keep_redemptions=_ids(session, ctx.id, "refund", end),
    )
    months = _month_ends(local_date(first, tz), last, end, tz)
    simulated_months: list[int] = []
    events = 0
    for moment, _, ident, kind, row in _events(session, ctx, replay.book.tz, last, end):
        while len(simulated_months) < len(months) and months[len(simulated_months)] <= moment:
            simulated_months.append(replay.balances()[0])
        events += 1
        if kind == "enrol":
            replay.enrol(ident, row, moment)
        elif kind == JOB_EXPIRE:
            replay.expire(row)
        elif kind == JOB_TIERS:
            replay.review(row)
        else:
            _apply(replay, ctx, row, moment)
    while len(simulated_months) < len(months):
        simulated_months.append(replay.balances()[0])

    actual_report = summary(session, ctx, as_of=last, now=now)
    actual = Figures(
        actual_report.points_issued,
        actual_report.points_redeemed,
        actual_report.points_expired,
        actual_report.points_outstanding,
        actual_report.liability,
        actual_report.redemption_rate,
        actual_report.breakage_rate,
        actual_report.tiers,
    )
    sim_spec = spec_at(sim_ctx, end)
    simulated = _simulated_figures(replay, sim_spec)
    changed = _changed_members(session, ctx, replay, end, tz)
    moves = Counter((row[3], row[4]) for row in changed if row[3] != row[4])
    result = SimulationResult(
        program=ctx.key,
        first=first,
        from_=_day_or_moment(first, tz) if given else local_date(first, tz).isoformat(),
        to=last,
        actual=actual,
        simulated=simulated,
        delta=_delta(actual, simulated, sim_spec),
        tier_moves=[
            {"from": before, "to": after, "members": count}
            for (before, after), count in sorted(moves.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        members_changed=len(changed),
        redemptions_refused=replay.redemptions_refused,
        cancellations_skipped=replay.cancellations_skipped,
        refused=dict(sorted(replay.refused.items())),
        events=events,
        currency=sim_spec.program.currency,
        monthly=[
            MonthPoint(
                local_date(moment - timedelta(microseconds=1), tz).strftime("%Y-%m"),
                liability_of(_balances(session, ctx.id, moment)[0], spec_at(ctx, moment)),
                liability_of(held, spec_at(sim_ctx, moment)),
            )
            for moment, held in zip(months, simulated_months, strict=True)
        ],
    )
    if members_out is not None:
        write_members(members_out, changed)
        result.members_out = str(members_out)
    return result


def _apply(replay: Replay, ctx: ProgramContext, row: Any, when: datetime) -> None:
    kind = row.kind
    if kind == "bonus":
        return  # the signup bonus: the enrolment replays it under the rules in force
    if kind == "adjust" and row.ref == opening_ref(row.code) and row.reason == OPENING_REASON:
        payload = json.loads(row.payload)
        expires = payload.get("expires")
        replay.opening(
            row.code, int(payload["points"]), date.fromisoformat(expires) if expires else None
        )
        return
    if kind in ("purchase", "return", "adjust"):
        replay.txn(_txn_row(replay, row), row.id)
    elif kind == "redeem":
        reward = _reward(replay, ctx, row, when)
        if reward is None or row.voucher is None:
            replay.refuse(row.id)
            return
        replay.redeem(
            row.code, reward, ref=row.ref, when=when, voucher=row.voucher, recorded_id=row.id
        )
    elif kind == "refund":
        replay.cancel(row.code, row.original_id, when)


def _month_ends(first_day: date, last: date, end: datetime, tz: Any) -> list[datetime]:
    """The ends of the months from ``first_day``'s to ``last``'s (the last one at the end
    of ``last``), at most the last CHART_MONTHS."""
    out: list[datetime] = []
    month = first_day.replace(day=1)
    while month <= last:
        following = (month + timedelta(days=32)).replace(day=1)
        out.append(min(local_midnight(following, tz), end))
        month = following
    return out[-CHART_MONTHS:]


def _day_or_moment(moment: datetime, tz: Any) -> str:
    day = local_date(moment, tz)
    if local_midnight(day, tz) == moment:
        return day.isoformat()
    return moment.astimezone(tz).isoformat()


def _simulated_figures(replay: Replay, spec: Program) -> Figures:
    flows = flows_of(replay.entry_sums())
    held, _ = replay.balances()
    keys = spec.tier_keys()
    tiers = dict.fromkeys(keys, 0)
    for m in replay.members.values():
        tiers[m.tier] = tiers.get(m.tier, 0) + 1
    return Figures(
        flows.issued,
        flows.redeemed,
        flows.expired,
        held,
        liability_of(held, spec),
        rate(flows.redeemed, flows.issued),
        rate(flows.expired, flows.issued),
        tiers,
    )


def _delta(actual: Figures, simulated: Figures, spec: Program) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in FIGURES:
        a, s = getattr(actual, name), getattr(simulated, name)
        if name == "liability":
            out[name] = format_amount(Decimal(s) - Decimal(a), spec.program.minor_digits)
        elif isinstance(a, float):
            out[name] = round(s - a, 6)
        else:
            out[name] = s - a
    return out


def _changed_members(
    session: Session, ctx: ProgramContext, replay: Replay, end: datetime, tz: Any
) -> list[tuple[str, int, int, str, str]]:
    """(member, actual balance, simulated balance, actual tier, simulated tier) of each
    member whose balance or tier at the end differs, by member code."""
    e, m = _entry, _member
    actual: dict[int, int] = {}
    for member_id, total in _stream(
        session,
        select(e.c.member_id, func.sum(e.c.points))
        .select_from(e.join(m, m.c.id == e.c.member_id))
        .where(and_(m.c.program_id == ctx.id, e.c.at < end))
        .group_by(e.c.member_id),
    ):
        actual[int(member_id)] = int(total or 0)
    states = list(replay.members.values())
    tiers = _tiers_on(session, ctx, local_date(end - timedelta(microseconds=1), tz))
    lowest = ctx.spec.tier_keys()[0]
    changed = []
    for s in states:
        balance = actual.get(s.id, 0)
        tier = tiers.get(s.id, lowest)
        if balance != s.balance or tier != s.tier:
            changed.append((s.code, balance, s.balance, tier, s.tier))
    changed.sort()
    return changed


def _tiers_on(session: Session, ctx: ProgramContext, day: date) -> dict[int, str]:
    """Each member's tier on ``day`` from the tier history (``rules.tiers.tier_at``: the
    last step dated on or before it), streamed rather than one IN list of every member."""
    c, m = _tier_change, _member
    found: dict[int, str] = {}
    for member_id, tier in _stream(
        session,
        select(c.c.member_id, c.c.tier)
        .select_from(c.join(m, m.c.id == c.c.member_id))
        .where(m.c.program_id == ctx.id, c.c.effective_on <= day)
        .order_by(c.c.member_id, c.c.effective_on, c.c.id),
    ):
        found[int(member_id)] = tier
    return found


def write_members(path: Path, rows: list[tuple[str, int, int, str, str]]) -> None:
    """The changed members as CSV with a header, or JSON Lines for a ``.jsonl`` name."""
    with atomic_file(path) as handle:
        if path.suffix.lower() == ".jsonl":
            for row in rows:
                handle.write(json.dumps(dict(zip(MEMBER_COLUMNS, row, strict=True))) + "\n")
            return
        writer = csv.writer(handle)
        writer.writerow(MEMBER_COLUMNS)
        writer.writerows(rows)
