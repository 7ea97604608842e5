"""The jobs cron runs, whole: points expiry, tier review, and ``nightly`` (both, then
voucher expiry), each under the program's job lock.

These take an ``Engine`` rather than a session: the job lock (store/locks.py) holds a
connection of its own that outlives the jobs, and each job runs and commits in its own
transaction (rolled back with ``dry_run``), so a later job failing leaves the earlier
ones done and recorded; running again for the date then redoes only what is missing.
The jobs themselves are in services/jobs.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TypeVar

from sqlalchemy import Engine
from sqlmodel import Session

from loyaltyctl.services.context import ProgramContext, load_context
from loyaltyctl.services.jobs import (
    EXPIRE_BATCH,
    ExpireResult,
    ExpiringResult,
    Progress,
    VoucherResult,
    announce_expiring,
    lock_name,
    resolve_as_of,
    run_expire,
    run_voucher_expiry,
)
from loyaltyctl.services.tier_review import TierResult, review_tiers
from loyaltyctl.store.db import session_scope
from loyaltyctl.store.locks import job_lock

T = TypeVar("T")

# How far ahead the nightly run announces expiring points (``points.expiring``), by
# default: what ``expire notices`` lists by default.
EXPIRING_WITHIN = 30

# Read at each step, as the steps happen: a run may wait for the lock, and a job's
# records carry the time it ran.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class NightlyResult:
    program: str
    as_of: date
    dry_run: bool
    expire: ExpireResult
    tiers: TierResult
    vouchers: VoucherResult
    expiring: ExpiringResult


def run_expire_job(
    engine: Engine,
    program: str | None,
    *,
    as_of: date | None = None,
    dry_run: bool = False,
    batch_size: int = EXPIRE_BATCH,
    progress: Progress | None = None,
    clock: Clock = utc_now,
) -> ExpireResult:
    """Expire the points due by ``as_of`` (default: today in the program's zone)."""
    key, day = _prepare(engine, program, as_of, clock)
    with _locked(engine, key, clock):
        return _expire(engine, key, day, dry_run, batch_size, progress, clock)


def run_tier_review_job(
    engine: Engine,
    program: str | None,
    *,
    as_of: date | None = None,
    dry_run: bool = False,
    clock: Clock = utc_now,
) -> TierResult:
    """Review the program's tiers as of ``as_of`` (default: today in its zone)."""
    key, day = _prepare(engine, program, as_of, clock)
    with _locked(engine, key, clock):
        return _review(engine, key, day, dry_run, clock)


def run_nightly(
    engine: Engine,
    program: str | None,
    *,
    as_of: date | None = None,
    dry_run: bool = False,
    batch_size: int = EXPIRE_BATCH,
    progress: Progress | None = None,
    clock: Clock = utc_now,
    within: int = EXPIRING_WITHIN,
) -> NightlyResult:
    """Points expiry, the ``points.expiring`` events of the ``within`` days after the
    date, tier review and voucher expiry for one date, under one hold of the lock. Each
    job is recorded per as-of date (each expiring date announced once per member):
    running again changes nothing, a later date catches up on missed nights.
    ``progress`` follows the points expiry."""
    key, day = _prepare(engine, program, as_of, clock)
    with _locked(engine, key, clock):
        expired = _expire(engine, key, day, dry_run, batch_size, progress, clock)
        expiring = _in_transaction(
            engine,
            key,
            dry_run,
            lambda session, ctx: announce_expiring(
                session, ctx, as_of=day, days=within, now=clock()
            ),
        )
        tiers = _review(engine, key, day, dry_run, clock)
        vouchers = _in_transaction(
            engine,
            key,
            dry_run,
            lambda session, ctx: run_voucher_expiry(session, ctx, as_of=day, now=clock()),
        )
    return NightlyResult(key, day, dry_run, expired, tiers, vouchers, expiring)


def _prepare(
    engine: Engine, program: str | None, as_of: date | None, clock: Clock
) -> tuple[str, date]:
    """The program's key and the as-of date, settled before waiting for the lock."""
    with session_scope(engine, write=False) as session:
        ctx = load_context(session, program)
        return ctx.key, resolve_as_of(ctx, as_of, now=clock())


@contextmanager
def _locked(engine: Engine, key: str, clock: Clock) -> Iterator[None]:
    with job_lock(engine, lock_name(key), now=clock()):
        yield


def _in_transaction(
    engine: Engine, key: str, dry_run: bool, work: Callable[[Session, ProgramContext], T]
) -> T:
    with session_scope(engine, dry_run=dry_run) as session:
        return work(session, load_context(session, key))


def _expire(
    engine: Engine,
    key: str,
    day: date,
    dry_run: bool,
    batch_size: int,
    progress: Progress | None,
    clock: Clock,
) -> ExpireResult:
    return _in_transaction(
        engine,
        key,
        dry_run,
        lambda session, ctx: run_expire(
            session,
            ctx,
            as_of=day,
            now=clock(),
            dry_run=dry_run,
            batch_size=batch_size,
            progress=progress,
        ),
    )


def _review(engine: Engine, key: str, day: date, dry_run: bool, clock: Clock) -> TierResult:
    return _in_transaction(
        engine,
        key,
        dry_run,
        lambda session, ctx: review_tiers(session, ctx, as_of=day, now=clock(), dry_run=dry_run),
    )
