"""Nightly jobs: points expiry, tier review and voucher expiry, plus expiry notices.

Each job records a ``job_run`` row per (program, job, as-of date) in the same transaction
as its changes, so a run either happened completely or not at all; running it again for
the same date finds the row and changes nothing, and a later date covers everything due
since (lots due on or before it, whatever their date). A date earlier than the last
completed run is refused: that run already took everything due by then.

Expiry is set-based: the due lots are captured once into a temporary table, then a few
``INSERT … SELECT`` / ``UPDATE`` statements write the expiry entries and the caches,
batched by lot id for the progress bar, never a Python loop per member. On PostgreSQL
the members concerned are locked first (``FOR UPDATE``, in id order) like any ledger
writer does, so a purchase or redemption posted meanwhile waits instead of racing.

The caller owns the transaction and the job lock (store/locks.py).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    FromClause,
    Integer,
    MetaData,
    Table,
    and_,
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

from loyaltyctl.errors import InvalidInput
from loyaltyctl.ledger.nightly import latest_start as _latest_start
from loyaltyctl.rules.expiry import inactivity_due
from loyaltyctl.rules.program import Program
from loyaltyctl.rules.timeutil import end_of_local_day, local_date, local_midnight
from loyaltyctl.services import events
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.store.models import JobRun, metadata

JOB_EXPIRE = "expire"
JOB_TIERS = "tiers"
JOB_VOUCHERS = "vouchers"
JOB_LABELS = {JOB_EXPIRE: "points expiry", JOB_TIERS: "tier review", JOB_VOUCHERS: "voucher expiry"}

EXPIRE_BATCH = 100_000

# (lots done, lots in all), called after each batch.
Progress = Callable[[int, int], None]

_member = metadata.tables["member"]
_lot = metadata.tables["points_lot"]
_entry = metadata.tables["points_entry"]
_txn = metadata.tables["txn"]
_job_run = metadata.tables["job_run"]


def lock_name(program_key: str) -> str:
    """One job lock per program: its nightly jobs never run twice at once."""
    return f"loyaltyctl-jobs:{program_key}"


def today(ctx: ProgramContext, now: datetime) -> date:
    return local_date(now, ctx.spec.program.tz)


def resolve_as_of(ctx: ProgramContext, as_of: date | None, *, now: datetime) -> date:
    """The as-of date: today in the program's time zone unless given; never in the future."""
    current = today(ctx, now)
    if as_of is None:
        return current
    if as_of > current:
        raise InvalidInput(
            f"--as-of {as_of} is in the future: today is {current} in {ctx.spec.program.timezone}",
            hint="jobs run for today or a past day; leave out --as-of for today",
        )
    return as_of


# ---- job runs ------------------------------------------------------------------------


def _start_run(
    session: Session, ctx: ProgramContext, job: str, as_of: date, now: datetime
) -> tuple[JobRun, bool]:
    """The run of ``job`` for ``as_of``: (the completed run, True) when it already
    happened, else (a new running row, False). Refuses a date before the last run."""
    table = _job_run
    existing = (
        session.execute(
            select(JobRun).where(
                table.c.program_id == ctx.id, table.c.job == job, table.c.as_of == as_of
            )
        )
        .scalars()
        .first()
    )
    if existing is not None and existing.status == "done":
        return existing, True
    last = session.execute(
        select(func.max(table.c.as_of)).where(
            table.c.program_id == ctx.id, table.c.job == job, table.c.status == "done"
        )
    ).scalar()
    if last is not None and as_of < last:
        label = JOB_LABELS.get(job, job)
        raise InvalidInput(
            f"{label} as of {as_of} is earlier than its last completed run, as of {last}, "
            f"in program {ctx.key}: that run already covered everything due by then",
            hint=f"run it as of {last} or later; a later date catches up on every missed day",
        )
    run = existing or JobRun(
        program_id=ctx.id, job=job, as_of=as_of, status="running", started_at=now
    )
    run.status = "running"
    run.started_at = now
    session.add(run)
    session.flush()
    return run, False


def _finish_run(session: Session, run: JobRun, now: datetime, **counts: Any) -> None:
    detail = counts.pop("detail", None)
    for key, value in counts.items():
        setattr(run, key, value)
    if detail is not None:
        run.detail = json.dumps(detail, sort_keys=True)
    run.status = "done"
    run.finished_at = now
    session.add(run)
    session.flush()


def _run_detail(run: JobRun) -> dict[str, Any]:
    try:
        value = json.loads(run.detail or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@contextmanager
def _temp_tables(session: Session, *tables: Table) -> Iterator[None]:
    """Temporary tables for one run. Dropped at the end; on an error the rollback drops
    them on PostgreSQL and the closed connection on SQLite."""
    conn = session.connection()
    for table in tables:
        table.drop(conn, checkfirst=True)
        table.create(conn)
    yield
    for table in reversed(tables):
        table.drop(conn)


def _temp(name: str, *columns: Column[Any]) -> Table:
    return Table(name, MetaData(), *columns, prefixes=["TEMPORARY"])


# ---- points expiry --------------------------------------------------------------------


@dataclass
class ExpireResult:
    program: str
    as_of: date
    members: int
    points_expired: int
    already_done: bool
    dry_run: bool = False
    lots: int = 0


def _due_condition(
    ctx: ProgramContext, spec: Program, as_of: date, lot: FromClause, member: FromClause
) -> ColumnElement[bool]:
    """Lots (joined to their member) whose points leave by ``as_of``: those dated on or
    before it, and under ``inactivity`` every lot of a member without a purchase for the
    policy's months. ``never`` lots carry no date."""
    tz = spec.program.tz
    dated = and_(lot.c.expires_on.is_not(None), lot.c.expires_on <= as_of)
    if spec.expiry.policy != "inactivity":
        return and_(lot.c.remaining > 0, dated)
    policy = spec.expiry
    last_day = _latest_start(as_of, lambda day: inactivity_due(policy, day))
    inactive = and_(
        func.coalesce(member.c.last_purchase_at, member.c.enrolled_at)
        < local_midnight(last_day + timedelta(days=1), tz),
        lot.c.earned_at < end_of_local_day(as_of, tz),
    )
    return and_(lot.c.remaining > 0, or_(dated, inactive))


def run_expire(
    session: Session,
    ctx: ProgramContext,
    *,
    as_of: date,
    now: datetime,
    dry_run: bool = False,
    batch_size: int = EXPIRE_BATCH,
    progress: Progress | None = None,
) -> ExpireResult:
    """Expire every lot due by ``as_of``: one ``expire`` entry per lot, tied to the run."""
    run, done = _start_run(session, ctx, JOB_EXPIRE, as_of, now)
    if done:
        return ExpireResult(
            ctx.key,
            as_of,
            run.members,
            run.points,
            True,
            dry_run,
            int(_run_detail(run).get("lots", 0)),
        )
    assert run.id is not None
    tz = ctx.spec.program.tz
    start = local_midnight(as_of, tz)
    # The version in force when the as-of day ends: the latest one a run can know of.
    version = ctx.version_at(end_of_local_day(as_of, tz))
    member = _member.alias("m")
    lot = _lot.alias("l")
    condition = _due_condition(ctx, version.spec, as_of, lot, member)

    locked = _temp("job_expire_member", Column("id", Integer, primary_key=True))
    due = _temp(
        "job_expire_due",
        Column("lot_id", Integer, primary_key=True),
        Column("member_id", Integer, nullable=False),
        Column("points", BigInteger, nullable=False),
        Column("earned_at", UTCDateTime(), nullable=False),
    )
    totals = _temp(
        "job_expire_total",
        Column("member_id", Integer, primary_key=True),
        Column("points", BigInteger, nullable=False),
    )
    with _temp_tables(session, locked, due, totals):
        _capture_due(session, ctx, condition, member, lot, locked, due)
        session.execute(
            insert(totals).from_select(
                ["member_id", "points"],
                select(due.c.member_id, func.sum(due.c.points)).group_by(due.c.member_id),
            )
        )
        count = int(session.execute(select(func.count()).select_from(due)).scalar() or 0)
        if progress:
            progress(0, count)
        written = 0
        for low, high in _batches(session, due, batch_size):
            in_batch = and_(due.c.lot_id > low, due.c.lot_id <= high)
            _write_entries(session, due, in_batch, run.id, version.id, start, now)
            session.execute(
                update(_lot)
                .where(_lot.c.id.in_(select(due.c.lot_id).where(in_batch)))
                .values(remaining=0)
            )
            # Every batch but the last holds exactly batch_size lots (rowcount of an
            # INSERT … SELECT is not reported by every driver).
            written = min(written + batch_size, count)
            if progress:
                progress(written, count)
        session.execute(
            update(_member)
            .where(_member.c.id.in_(select(totals.c.member_id)))
            .values(
                balance=_member.c.balance
                - select(totals.c.points)
                .where(totals.c.member_id == _member.c.id)
                .scalar_subquery(),
                updated_at=now,
            )
        )
        members, points = session.execute(
            select(func.count(), func.coalesce(func.sum(totals.c.points), 0)).select_from(totals)
        ).one()
        events.points_expired(session, ctx.id, totals, as_of, now)
    _finish_run(session, run, now, members=int(members), points=int(points), detail={"lots": count})
    return ExpireResult(ctx.key, as_of, int(members), int(points), False, dry_run, count)


def _capture_due(
    session: Session,
    ctx: ProgramContext,
    condition: ColumnElement[bool],
    member: FromClause,
    lot: FromClause,
    locked: Table,
    due: Table,
) -> None:
    """Copy the due lots into ``due``. On PostgreSQL their members are locked first, and
    only lots of locked members are taken: a writer that got in before the lock has
    committed by then, and any later one waits for this run."""
    of_program = member.c.program_id == ctx.id
    lots_of_member = lot.join(member, member.c.id == lot.c.member_id)
    chosen = select(lot.c.id, lot.c.member_id, lot.c.remaining, lot.c.earned_at).select_from(
        lots_of_member
    )
    if session.get_bind().dialect.name == "postgresql":
        has_due = exists(select(lot.c.id).where(lot.c.member_id == member.c.id, condition))
        session.execute(
            insert(locked).from_select(
                ["id"],
                select(member.c.id)
                .where(of_program, has_due)
                .order_by(member.c.id)
                .with_for_update(of=member),
            )
        )
        chosen = chosen.where(lot.c.member_id.in_(select(locked.c.id)))
    session.execute(
        insert(due).from_select(
            ["lot_id", "member_id", "points", "earned_at"], chosen.where(of_program, condition)
        )
    )


def _batches(session: Session, due: Table, size: int) -> Iterator[tuple[int, int]]:
    """(exclusive low, inclusive high) lot id bounds of ``size`` due lots each."""
    low = -1
    while True:
        high = session.execute(
            select(due.c.lot_id)
            .where(due.c.lot_id > low)
            .order_by(due.c.lot_id)
            .offset(size - 1)
            .limit(1)
        ).scalar()
        if high is None:
            high = session.execute(
                select(func.max(due.c.lot_id)).where(due.c.lot_id > low)
            ).scalar()
            if high is None:
                return
            yield low, int(high)
            return
        yield low, int(high)
        low = int(high)


def _write_entries(
    session: Session,
    due: Table,
    in_batch: ColumnElement[bool],
    run_id: int,
    version_id: int,
    start: datetime,
    now: datetime,
) -> None:
    # Points leave at the start of the as-of day, but never before they were earned
    # (a lot earned on its own expiry day).
    at = case((due.c.earned_at > start, due.c.earned_at), else_=literal(start, UTCDateTime()))
    session.execute(
        insert(_entry).from_select(
            [
                "member_id",
                "job_run_id",
                "lot_id",
                "kind",
                "points",
                "at",
                "recorded_at",
                "program_version_id",
            ],
            select(
                due.c.member_id,
                literal(run_id, Integer),
                due.c.lot_id,
                literal("expire"),
                -due.c.points,
                at,
                literal(now, UTCDateTime()),
                literal(version_id, Integer),
            ).where(in_batch),
        )
    )


# ---- voucher expiry ----------------------------------------------------------------------


@dataclass
class VoucherResult:
    expired: int
    already_done: bool
    available: bool = True


VoucherExpiry = Callable[..., int]


def voucher_expiry_function() -> VoucherExpiry | None:
    """``rewards.expire_vouchers`` when this build has it."""
    name = "loyaltyctl.services.rewards"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return None
    found: VoucherExpiry | None = getattr(module, "expire_vouchers", None)
    return found


def run_voucher_expiry(
    session: Session, ctx: ProgramContext, *, as_of: date, now: datetime
) -> VoucherResult:
    """Mark vouchers whose validity ended by the end of the as-of day as expired."""
    expire_vouchers = voucher_expiry_function()
    if expire_vouchers is None:
        return VoucherResult(0, False, available=False)
    run, done = _start_run(session, ctx, JOB_VOUCHERS, as_of, now)
    if done:
        return VoucherResult(int(_run_detail(run).get("expired", 0)), True)
    count = expire_vouchers(
        session, ctx, as_of_end=end_of_local_day(as_of, ctx.spec.program.tz), now=now
    )
    _finish_run(session, run, now, detail={"expired": int(count)})
    return VoucherResult(int(count), False)


# ---- expiry notices -------------------------------------------------------------------------


@dataclass
class ExpiringResult:
    within: int
    events: int


def announce_expiring(
    session: Session, ctx: ProgramContext, *, as_of: date, days: int, now: datetime
) -> ExpiringResult:
    """``points.expiring`` events for what ``expire notices --within`` lists: once per
    member and expiry date, so running it every night announces each date once."""
    notices = expiry_notices(session, ctx, as_of=as_of, days=days)
    count = events.points_expiring(
        session, ctx.id, ((n.member, n.date, n.points) for n in notices), now
    )
    return ExpiringResult(days, count)


@dataclass
class Notice:
    member: str
    name: str | None
    email: str | None
    status: str
    date: date
    points: int
    balance: int


def expiry_notices(
    session: Session, ctx: ProgramContext, *, as_of: date, days: int
) -> Iterator[Notice]:
    """Points that will leave in the ``days`` after ``as_of`` (``as_of`` excluded: its
    run takes them), one notice per member and date, by date then member."""
    if days < 1:
        raise InvalidInput(
            f"--within {days} days is not a period", hint="give at least one day, e.g. 30d"
        )
    spec = ctx.spec
    last = as_of + timedelta(days=days)
    m, lot = _member, _lot
    dated = (
        select(
            m.c.code,
            m.c.name,
            m.c.email,
            m.c.status,
            lot.c.expires_on,
            func.sum(lot.c.remaining),
            m.c.balance,
        )
        .select_from(lot.join(m, m.c.id == lot.c.member_id))
        .where(
            m.c.program_id == ctx.id,
            lot.c.remaining > 0,
            lot.c.expires_on > as_of,
            lot.c.expires_on <= last,
        )
        .group_by(m.c.id, m.c.code, m.c.name, m.c.email, m.c.status, lot.c.expires_on, m.c.balance)
        .order_by(lot.c.expires_on, m.c.code)
    )
    notices = (
        Notice(code, name, email, status, day, int(points), int(balance))
        for code, name, email, status, day, points, balance in session.execute(dated)
    )
    if spec.expiry.policy != "inactivity":
        yield from notices
        return
    inactive = list(_inactivity_notices(session, ctx, spec, as_of, last))
    yield from sorted([*notices, *inactive], key=lambda n: (n.date, n.member))


def _inactivity_notices(
    session: Session, ctx: ProgramContext, spec: Program, as_of: date, last: date
) -> Iterator[Notice]:
    policy = spec.expiry
    tz = spec.program.tz

    def due(day: date) -> date | None:
        return inactivity_due(policy, day)

    after = local_midnight(_latest_start(as_of, due) + timedelta(days=1), tz)
    until = local_midnight(_latest_start(last, due) + timedelta(days=1), tz)
    m, lot = _member, _lot
    activity = func.coalesce(m.c.last_purchase_at, m.c.enrolled_at)
    rows = session.execute(
        select(
            m.c.code,
            m.c.name,
            m.c.email,
            m.c.status,
            activity,
            func.sum(lot.c.remaining),
            m.c.balance,
        )
        .select_from(lot.join(m, m.c.id == lot.c.member_id))
        .where(
            m.c.program_id == ctx.id,
            lot.c.remaining > 0,
            activity >= after,
            activity < until,
        )
        .group_by(m.c.id, m.c.code, m.c.name, m.c.email, m.c.status, activity, m.c.balance)
    )
    for code, name, email, status, moment, points, balance in rows:
        day = due(local_date(moment, tz))
        assert day is not None
        yield Notice(code, name, email, status, day, int(points), int(balance))
