"""Events of the services that change the ledger outside the posting core: one call per
place, in the transaction of the change. (The posting core's events — enrolments,
transactions, upgrades — are derived from its postings by ``store.bulk``.)

An event names the member by code and never carries personal data: names, e-mail
addresses, phone numbers, birthdays and free-text reasons stay in the database."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from loyaltyctl.store.eventlog import existing_once, is_sqlite, stored_time, write_events
from loyaltyctl.store.models import metadata

EVENT_TYPES = (
    "member.enrolled",
    "member.status_changed",
    "member.tier_changed",
    "member.erased",
    "member.merged",
    "txn.posted",
    "points.expiring",
    "points.expired",
    "voucher.issued",
    "voucher.used",
    "voucher.cancelled",
    "voucher.expired",
)

_member = metadata.tables["member"]
_voucher = metadata.tables["voucher"]
_txn = metadata.tables["txn"]
_tier_change = metadata.tables["tier_change"]


def _data(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_jsonable)


def _jsonable(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} in an event")


def record(
    session: Session,
    program_id: int,
    type_: str,
    member: str | None,
    data: dict[str, Any],
    *,
    now: datetime,
) -> None:
    """One event in the session's transaction."""
    write_events(
        session,
        [(stored_time(is_sqlite(session), now), type_, program_id, member, _data(data), None)],
    )


def record_many(
    session: Session,
    program_id: int,
    type_: str,
    rows: Iterable[tuple[str, dict[str, Any]]],
    *,
    now: datetime,
    once: str | None = None,
) -> int:
    """Events of one type, (member, data) each; with ``once``, the data key that makes an
    event unique per member (one ``points.expiring`` per member and date)."""
    at = stored_time(is_sqlite(session), now)
    out = [
        (at, type_, program_id, member, _data(data), str(data[once]) if once else None)
        for member, data in rows
    ]
    write_events(session, out)
    return len(out)


# ---- members ---------------------------------------------------------------------------


def status_changed(
    session: Session, program_id: int, member: str, previous: str, status: str, now: datetime
) -> None:
    data = {"previous": previous, "status": status}
    record(session, program_id, "member.status_changed", member, data, now=now)


def erased(session: Session, program_id: int, member: str, now: datetime) -> None:
    record(session, program_id, "member.erased", member, {}, now=now)


# ---- vouchers ------------------------------------------------------------------------------


def voucher_event(session: Session, type_: str, voucher: Any, member: str, now: datetime) -> None:
    """``voucher.issued``, ``voucher.used`` or ``voucher.cancelled`` for a voucher row."""
    when = {
        "voucher.issued": voucher.issued_at,
        "voucher.used": voucher.used_at,
        "voucher.cancelled": voucher.cancelled_at,
    }[type_]
    data = {
        "voucher": voucher.code,
        "reward": voucher.reward_key,
        "points": voucher.points,
        "at": when,
        "expires_at": voucher.expires_at,
    }
    record(session, voucher.program_id, type_, member, data, now=now)


def vouchers_expired(session: Session, program_id: int, now: datetime) -> int:
    """``voucher.expired`` for the vouchers the nightly run has just marked expired (their
    ``expired_at`` is this run's time)."""
    v, m = _voucher, _member
    rows = session.execute(
        select(m.c.code, v.c.code, v.c.reward_key, v.c.points, v.c.expires_at)
        .select_from(v.join(m, m.c.id == v.c.member_id))
        .where(v.c.program_id == program_id, v.c.status == "expired", v.c.expired_at == now)
        .order_by(v.c.id)
    )
    return record_many(
        session,
        program_id,
        "voucher.expired",
        (
            (member, {"voucher": code, "reward": reward, "points": points, "expires_at": ends})
            for member, code, reward, points, ends in rows
        ),
        now=now,
    )


# ---- nightly ------------------------------------------------------------------------------


def points_expired(
    session: Session, program_id: int, totals: Any, as_of: date, now: datetime
) -> int:
    """``points.expired`` per member from the expiry run's (member_id, points) table."""
    m = _member
    rows = session.execute(
        select(m.c.code, totals.c.points)
        .select_from(totals.join(m, m.c.id == totals.c.member_id))
        .order_by(m.c.code)
    )
    return record_many(
        session,
        program_id,
        "points.expired",
        ((code, {"as_of": as_of, "points": int(points)}) for code, points in rows),
        now=now,
    )


def points_expiring(
    session: Session,
    program_id: int,
    notices: Iterable[tuple[str, date, int]],
    now: datetime,
) -> int:
    """``points.expiring`` for (member, expiry date, points) not announced before: once per
    member and date, however often the nightly runs."""
    wanted = [(code, day.isoformat(), points) for code, day, points in notices]
    done = existing_once(session, program_id, "points.expiring", ((c, d) for c, d, _ in wanted))
    return record_many(
        session,
        program_id,
        "points.expiring",
        (
            (code, {"expires_on": day, "points": points})
            for code, day, points in wanted
            if (code, day) not in done
        ),
        now=now,
        once="expires_on",
    )


def tiers_reviewed(
    session: Session,
    program_id: int,
    run_id: int,
    changes: Iterable[tuple[str, str, str]],
    now: datetime,
) -> int:
    """``member.tier_changed`` for the review's moves (code, tier before, tier after) that
    were written (a member whose tier moved meanwhile is left alone by the review)."""
    tc, m = _tier_change, _member
    written = {
        code: (tier, effective)
        for code, tier, effective in session.execute(
            select(m.c.code, tc.c.tier, tc.c.effective_on)
            .select_from(tc.join(m, m.c.id == tc.c.member_id))
            .where(tc.c.job_run_id == run_id)
        )
    }
    return record_many(
        session,
        program_id,
        "member.tier_changed",
        (
            (code, {"effective_on": written[code][1], "reason": "review", "tier": after})
            for code, before, after in sorted(changes)
            if before != after and code in written
        ),
        now=now,
    )
