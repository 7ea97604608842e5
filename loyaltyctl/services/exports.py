"""Exports for other systems: members, transactions, the ledger, vouchers.

Each export is a fixed list of columns (documented in docs/exports.md; renaming one
breaks somebody's CRM import) and a stream of rows read in batches, so memory stays flat.
With ``since`` only rows written or changed from that instant on are exported, judged by
recording times (``recorded_at``), never by the backdatable effective times.

Personal data of an erased member never leaves: the member table holds none after
``member erase``, and free text typed about the member (status and adjustment reasons)
is left out of every export for that member too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from loyaltyctl.errors import InvalidInput
from loyaltyctl.rules.money import format_amount, from_minor
from loyaltyctl.services.context import ProgramContext
from loyaltyctl.store.models import (
    JobRun,
    Member,
    PointsEntry,
    PointsLot,
    ProgramVersion,
    Txn,
    Voucher,
)

KINDS = ("members", "transactions", "ledger", "vouchers")
BATCH = 2000

MEMBER_COLUMNS = (
    "member",
    "status",
    "tier",
    "tier_since",
    "enrolled_at",
    "balance",
    "debt",
    "last_purchase_at",
    "name",
    "email",
    "phone",
    "birthday",
    "status_reason",
    "erased",
    "erased_at",
    "updated_at",
)
TRANSACTION_COLUMNS = (
    "ref",
    "member",
    "kind",
    "occurred_at",
    "recorded_at",
    "amount",
    "currency",
    "points",
    "balance_after",
    "tier_after",
    "original",
    "reason",
    "program_version",
    "store",
)
LEDGER_COLUMNS = (
    "entry_id",
    "member",
    "kind",
    "points",
    "at",
    "recorded_at",
    "txn_ref",
    "job",
    "job_as_of",
    "lot_id",
    "lot_expires_on",
    "program_version",
)
VOUCHER_COLUMNS = (
    "voucher",
    "member",
    "reward",
    "reward_name",
    "reward_kind",
    "reward_value",
    "reward_product",
    "points",
    "status",
    "issued_at",
    "expires_at",
    "used_at",
    "cancelled_at",
    "expired_at",
    "ref",
    "cancel_ref",
)
COLUMNS = {
    "members": MEMBER_COLUMNS,
    "transactions": TRANSACTION_COLUMNS,
    "ledger": LEDGER_COLUMNS,
    "vouchers": VOUCHER_COLUMNS,
}


@dataclass
class Export:
    kind: str
    columns: tuple[str, ...]
    rows: Iterator[tuple[Any, ...]]


def export(
    session: Session,
    ctx: ProgramContext,
    kind: str,
    *,
    since: datetime | None,
    now: datetime,
) -> Export:
    """The columns and a lazy stream of rows (plain str/int/bool/None values, instants
    as ISO 8601 UTC strings, dates as YYYY-MM-DD)."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown export {kind!r}", hint="export one of: " + ", ".join(KINDS))
    rows = {
        "members": _members,
        "transactions": _transactions,
        "ledger": _ledger,
        "vouchers": _vouchers,
    }[kind](session, ctx, since, now)
    return Export(kind, COLUMNS[kind], rows)


def _instant(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _day(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _stream(session: Session, stmt: Any) -> Iterator[Any]:
    """Rows fetched a batch at a time (a server-side cursor on PostgreSQL)."""
    with session.connection().execution_options(yield_per=BATCH).execute(stmt) as result:
        yield from result


def _members(
    session: Session, ctx: ProgramContext, since: datetime | None, now: datetime
) -> Iterator[tuple[Any, ...]]:
    stmt = (
        select(
            *(
                col(getattr(Member, name))
                for name in (
                    "code",
                    "status",
                    "tier",
                    "tier_since",
                    "enrolled_at",
                    "balance",
                    "debt",
                    "last_purchase_at",
                    "name",
                    "email",
                    "phone",
                    "birthday",
                    "status_reason",
                    "erased_at",
                    "updated_at",
                )
            )
        )
        .where(col(Member.program_id) == ctx.id)
        .order_by(col(Member.id))
    )
    if since is not None:
        # A balance moves without touching the member row: entries and transactions
        # recorded since then count as a change of the member.
        stmt = stmt.where(
            or_(
                col(Member.updated_at) >= since,
                exists().where(
                    col(PointsEntry.member_id) == col(Member.id),
                    col(PointsEntry.recorded_at) >= since,
                ),
                exists().where(col(Txn.member_id) == col(Member.id), col(Txn.recorded_at) >= since),
            )
        )
    for m in _stream(session, stmt):
        erased = m.erased_at is not None
        yield (
            m.code,
            m.status,
            m.tier,
            _day(m.tier_since),
            _instant(m.enrolled_at),
            m.balance,
            m.debt,
            _instant(m.last_purchase_at),
            None if erased else m.name,
            None if erased else m.email,
            None if erased else m.phone,
            None if erased else _day(m.birthday),
            None if erased else m.status_reason,
            erased,
            _instant(m.erased_at),
            _instant(m.updated_at),
        )


def _transactions(
    session: Session, ctx: ProgramContext, since: datetime | None, now: datetime
) -> Iterator[tuple[Any, ...]]:
    original = aliased(Txn)
    stmt = (
        select(
            col(Txn.ref),
            col(Member.code),
            col(Member.erased_at),
            col(Txn.kind),
            col(Txn.occurred_at),
            col(Txn.recorded_at),
            col(Txn.amount_minor),
            col(Txn.points),
            col(Txn.balance_after),
            col(Txn.tier_after),
            col(original.ref).label("original_ref"),
            col(Txn.reason),
            col(ProgramVersion.version),
            col(Txn.store),
        )
        .join(Member, col(Member.id) == col(Txn.member_id))
        .join(ProgramVersion, col(ProgramVersion.id) == col(Txn.program_version_id))
        .outerjoin(original, col(original.id) == col(Txn.original_id))
        .where(col(Txn.program_id) == ctx.id)
        .order_by(col(Txn.id))
    )
    if since is not None:
        stmt = stmt.where(col(Txn.recorded_at) >= since)
    spec = ctx.spec
    digits = spec.program.minor_digits
    currency = spec.program.currency
    for row in _stream(session, stmt):
        amount = row.amount_minor
        yield (
            row.ref,
            row.code,
            row.kind,
            _instant(row.occurred_at),
            _instant(row.recorded_at),
            format_amount(from_minor(amount, digits), digits) if amount is not None else None,
            currency if amount is not None else None,
            row.points,
            row.balance_after,
            row.tier_after or None,
            row.original_ref,
            None if row.erased_at is not None else row.reason,
            row.version,
            row.store,
        )


def _ledger(
    session: Session, ctx: ProgramContext, since: datetime | None, now: datetime
) -> Iterator[tuple[Any, ...]]:
    stmt = (
        select(
            col(PointsEntry.id),
            col(Member.code),
            col(PointsEntry.kind),
            col(PointsEntry.points),
            col(PointsEntry.at),
            col(PointsEntry.recorded_at),
            col(Txn.ref),
            col(JobRun.job),
            col(JobRun.as_of),
            col(PointsEntry.lot_id),
            col(PointsLot.expires_on),
            col(ProgramVersion.version),
        )
        .join(Member, col(Member.id) == col(PointsEntry.member_id))
        .join(ProgramVersion, col(ProgramVersion.id) == col(PointsEntry.program_version_id))
        .outerjoin(Txn, col(Txn.id) == col(PointsEntry.txn_id))
        .outerjoin(JobRun, col(JobRun.id) == col(PointsEntry.job_run_id))
        .outerjoin(PointsLot, col(PointsLot.id) == col(PointsEntry.lot_id))
        .where(col(Member.program_id) == ctx.id)
        .order_by(col(PointsEntry.id))
    )
    if since is not None:
        stmt = stmt.where(col(PointsEntry.recorded_at) >= since)
    for row in _stream(session, stmt):
        yield (
            row.id,
            row.code,
            row.kind,
            row.points,
            _instant(row.at),
            _instant(row.recorded_at),
            row.ref,
            row.job,
            _day(row.as_of),
            row.lot_id,
            _day(row.expires_on),
            row.version,
        )


def _vouchers(
    session: Session, ctx: ProgramContext, since: datetime | None, now: datetime
) -> Iterator[tuple[Any, ...]]:
    redeem = aliased(Txn)
    cancel = aliased(Txn)
    stmt: Any = (
        select(
            col(Voucher.code).label("voucher"),
            col(Member.code).label("member"),
            col(Voucher.reward_key),
            col(Voucher.reward_name),
            col(Voucher.reward_kind),
            col(Voucher.reward_value),
            col(Voucher.reward_product),
            col(Voucher.points),
            col(Voucher.status),
            col(Voucher.issued_at),
            col(Voucher.expires_at),
            col(Voucher.used_at),
            col(Voucher.cancelled_at),
            col(Voucher.expired_at),
            col(redeem.ref).label("ref"),
            col(cancel.ref).label("cancel_ref"),
        )
        .join(Member, col(Member.id) == col(Voucher.member_id))
        .join(redeem, col(redeem.id) == col(Voucher.txn_id))
        .outerjoin(cancel, col(cancel.id) == col(Voucher.cancel_txn_id))
        .where(col(Voucher.program_id) == ctx.id)
        .order_by(col(Voucher.id))
    )
    if since is not None:
        stmt = stmt.where(
            or_(
                col(redeem.recorded_at) >= since,
                col(Voucher.used_at) >= since,
                col(Voucher.cancelled_at) >= since,
                col(Voucher.expired_at) >= since,
                # Lapsed by its date since then, even if no job has marked it yet.
                and_(col(Voucher.expires_at) >= since, col(Voucher.expires_at) <= now),
            )
        )
    for row in _stream(session, stmt):
        status = row.status
        if status == "issued" and row.expires_at <= now:
            status = "expired"
        yield (
            row.voucher,
            row.member,
            row.reward_key,
            row.reward_name,
            row.reward_kind,
            row.reward_value,
            row.reward_product,
            row.points,
            status,
            _instant(row.issued_at),
            _instant(row.expires_at),
            _instant(row.used_at),
            _instant(row.cancelled_at),
            _instant(row.expired_at),
            row.ref,
            row.cancel_ref,
        )
