"""The ledger's tables.

Amounts are stored as integers in the currency's minor units (SQLite has no exact
decimal type); timestamps are naive UTC; dates a member sees (expiry dates, as-of dates)
are program-local calendar dates.

The member ledger tables (``txn``, ``points_lot``, ``points_entry``, ``tier_change``,
``voucher``) and ``audit`` declare no foreign keys: a key checked on every insert cost
every purchase a lookup per reference (eleven of them) and would stop the tables from
being distributed by member (docs/scaling.md), while ``db check`` verifies each of those
references (``services/check.py``). Their indexes are the ones a query of the tool reads.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

# A naming convention makes Alembic's batch mode on SQLite and constraint names on
# PostgreSQL agree, so migrations can address constraints by name.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata

# Points, balances and job totals are 64-bit: BIGINT on PostgreSQL; SQLite's INTEGER is
# already 64-bit, so its tables stay as they are (migration 0006 widens PostgreSQL's).
POINTS = BigInteger().with_variant(Integer(), "sqlite")
# So are the ids of the tables that grow with every purchase, and the columns naming
# them (migration 0008); SQLite keeps INTEGER, which makes an id its rowid.
ID = BigInteger().with_variant(Integer(), "sqlite")


class ProgramRow(SQLModel, table=True):
    __tablename__ = "program"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=64)
    name: str
    created_at: datetime


class ProgramVersion(SQLModel, table=True):
    __tablename__ = "program_version"
    __table_args__ = (UniqueConstraint("program_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    program_id: int = Field(foreign_key="program.id", index=True)
    version: int
    fingerprint: str = Field(max_length=64)
    source: str = Field(sa_column=Column(Text, nullable=False))
    spec: str = Field(sa_column=Column(Text, nullable=False))
    loaded_at: datetime


class Member(SQLModel, table=True):
    __tablename__ = "member"
    __table_args__ = (
        UniqueConstraint("program_id", "code"),
        CheckConstraint("debt >= 0", name="debt_not_negative"),
        Index("ix_member_email_key", "program_id", "email_key"),
        Index("ix_member_phone_rev", "program_id", "phone_rev"),
    )

    id: int | None = Field(default=None, primary_key=True)
    program_id: int = Field(foreign_key="program.id")
    code: str = Field(max_length=128)
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    birthday: date | None = None
    status: str = Field(default="active", max_length=16, index=True)
    status_reason: str | None = None
    tier: str = Field(max_length=64, index=True)
    # When the member reached or last requalified for the tier: the hold runs from here.
    tier_since: date | None = None
    enrolled_at: datetime
    erased_at: datetime | None = None
    # Caches of the ledger, kept in the same transaction as the entries; `db check`
    # recomputes them from the entries.
    balance: int = Field(default=0, sa_type=POINTS)
    debt: int = Field(default=0, sa_type=POINTS)
    last_purchase_at: datetime | None = None
    updated_at: datetime
    # Search keys of ``member find`` (rules.search), kept with the personal data they come
    # from and removed with it: the e-mail lower-cased, the phone's digits reversed (so a
    # number typed with or without its country code is a range scan of one index).
    email_key: str | None = None
    phone_rev: str | None = Field(default=None, max_length=32)


class TierChangeRow(SQLModel, table=True):
    """One step of a member's tier history: the tier held from ``effective_on`` (a
    program-local date) until the next step. ``member.tier``/``tier_since`` cache the
    latest step; ``db check`` compares them."""

    __tablename__ = "tier_change"
    __table_args__ = (
        Index("ix_tier_change_member", "member_id", "effective_on"),
        CheckConstraint(
            "reason IN ('enrol', 'upgrade', 'review', 'merge', 'manual')", name="reason_known"
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    member_id: int
    tier: str = Field(max_length=64)
    effective_on: date
    reason: str = Field(max_length=16)
    recorded_at: datetime
    txn_id: int | None = Field(default=None, sa_type=ID)
    job_run_id: int | None = None


class Txn(SQLModel, table=True):
    """What the outside world sent: one row per reference."""

    __tablename__ = "txn"
    __table_args__ = (
        UniqueConstraint("program_id", "ref"),
        Index("ix_txn_member_occurred", "member_id", "occurred_at"),
        # Only returns name an original: the index holds them alone.
        Index(
            "ix_txn_original",
            "original_id",
            sqlite_where=text("original_id IS NOT NULL"),
            postgresql_where=text("original_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    program_id: int
    member_id: int
    ref: str = Field(max_length=200)
    kind: str = Field(max_length=16)
    occurred_at: datetime
    recorded_at: datetime
    amount_minor: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    points: int = Field(default=0, sa_type=POINTS)
    balance_after: int = Field(default=0, sa_type=POINTS)
    tier_after: str = ""
    original_id: int | None = Field(default=None, sa_type=ID)
    reason: str | None = None
    # Qualifying activity this transaction adds (negative for returns), dated by
    # `qual_at`: a return counts against the window of the purchase it undoes.
    qual_points: int = Field(default=0, sa_type=POINTS)
    qual_spend_minor: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    qual_visits: int = 0
    qual_at: datetime
    program_version_id: int
    # The shop or till that sent it, as the till file names it (not part of the payload a
    # retry is compared on).
    store: str | None = Field(default=None, max_length=64)


class PointsLot(SQLModel, table=True):
    __tablename__ = "points_lot"
    __table_args__ = (
        Index("ix_points_lot_member", "member_id", "expires_on"),
        # The lots the expiry job can still take: spent and expired lots drop out of it.
        Index(
            "ix_points_lot_open",
            "expires_on",
            sqlite_where=text("remaining > 0"),
            postgresql_where=text("remaining > 0"),
        ),
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_in_range"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    member_id: int
    txn_id: int = Field(sa_type=ID)
    kind: str = Field(max_length=16)
    earned_at: datetime
    available_at: datetime
    expires_on: date | None = None
    points: int = Field(sa_type=POINTS)
    remaining: int = Field(sa_type=POINTS)


class PointsEntry(SQLModel, table=True):
    """Append-only signed movement. Each entry touches at most one lot; entries with no
    lot move the member's debt."""

    __tablename__ = "points_entry"
    __table_args__ = (
        Index("ix_points_entry_member", "member_id", "at"),
        CheckConstraint(
            "txn_id IS NOT NULL OR job_run_id IS NOT NULL", name="belongs_to_txn_or_job"
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    member_id: int
    txn_id: int | None = Field(default=None, index=True, sa_type=ID)
    job_run_id: int | None = None
    lot_id: int | None = Field(default=None, sa_type=ID)
    kind: str = Field(max_length=16)
    points: int = Field(sa_type=POINTS)
    at: datetime
    recorded_at: datetime
    program_version_id: int


class Voucher(SQLModel, table=True):
    __tablename__ = "voucher"
    __table_args__ = (
        Index("ix_voucher_member_status", "member_id", "status"),
        # A till's reference for using a voucher: its retry is recognised as such.
        Index("ix_voucher_use_ref", "program_id", "use_ref", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    program_id: int
    member_id: int
    txn_id: int = Field(unique=True, sa_type=ID)
    code: str = Field(unique=True, max_length=32)
    reward_key: str = Field(max_length=64)
    reward_name: str
    reward_kind: str = Field(max_length=32)
    reward_value: str | None = None
    reward_product: str | None = None
    points: int = Field(sa_type=POINTS)
    status: str = Field(default="issued", max_length=16)
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    cancelled_at: datetime | None = None
    expired_at: datetime | None = None
    cancel_txn_id: int | None = Field(default=None, sa_type=ID)
    use_ref: str | None = Field(default=None, max_length=200)


class JobRun(SQLModel, table=True):
    __tablename__ = "job_run"
    __table_args__ = (UniqueConstraint("program_id", "job", "as_of"),)

    id: int | None = Field(default=None, primary_key=True)
    program_id: int = Field(foreign_key="program.id")
    job: str = Field(max_length=32)
    as_of: date
    status: str = Field(max_length=16)
    started_at: datetime
    finished_at: datetime | None = None
    members: int = Field(default=0, sa_type=POINTS)
    points: int = Field(default=0, sa_type=POINTS)
    upgraded: int = Field(default=0, sa_type=POINTS)
    downgraded: int = Field(default=0, sa_type=POINTS)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class JobLock(SQLModel, table=True):
    """Who runs a nightly job now (SQLite's stand-in for an advisory lock)."""

    __tablename__ = "job_lock"

    name: str = Field(primary_key=True, max_length=100)
    holder: str
    acquired_at: datetime


class EventRow(SQLModel, table=True):
    """What happened, for the CRM and the mailer: append-only, written in the transaction
    of the change it reports, ids increasing in commit order within a program. Member
    codes only, never personal data. ``once`` is set on events that must be written at
    most once (``points.expiring`` per member and expiry date)."""

    __tablename__ = "event"
    __table_args__ = (
        Index(
            "uq_event_once",
            "program_id",
            "type",
            "member",
            "once",
            unique=True,
            sqlite_where=text("once IS NOT NULL"),
            postgresql_where=text("once IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    at: datetime
    type: str = Field(max_length=32)
    program_id: int = Field(foreign_key="program.id")
    member: str | None = Field(default=None, max_length=128)
    data: str = Field(sa_column=Column(Text, nullable=False))
    once: str | None = Field(default=None, max_length=64)


class EventCursor(SQLModel, table=True):
    """How far each consumer of a program's events has read: the last id delivered."""

    __tablename__ = "event_cursor"

    consumer: str = Field(primary_key=True, max_length=100)
    program_id: int = Field(primary_key=True, foreign_key="program.id")
    last_id: int = Field(default=0, sa_type=ID)
    updated_at: datetime


class AuditRow(SQLModel, table=True):
    """Who changed what: one row per member (or per command, when it touched many) of
    every write that changed something, written in the same transaction
    (``store.audit``). ``summary`` never holds personal data."""

    __tablename__ = "audit"
    __table_args__ = (
        Index("ix_audit_member", "member_id", "at"),
        Index("ix_audit_at", "at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ID)
    at: datetime
    actor: str = Field(max_length=128)
    command: str = Field(max_length=64)
    program_id: int | None = Field(default=None, foreign_key="program.id")
    member_id: int | None = None
    ref: str | None = Field(default=None, max_length=200)
    summary: str = Field(sa_column=Column(Text, nullable=False))
