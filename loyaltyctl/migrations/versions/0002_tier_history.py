"""tier history

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00

Adds ``tier_change`` (one row per step of a member's tier history) and back-fills it from
what a database of revision 0001 holds:

1. the enrolment: the lowest tier of the program version in force when the member
   enrolled, dated by the local day of enrolment (reason ``enrol``);
2. every change visible in ``txn.tier_after`` along the member's transactions (in the
   order they happened): a move up is an ``upgrade`` dated by that transaction's local
   day; a move down happened at a tier review between the two transactions, so it is a
   ``review`` dated by the last completed tier review run in between (else the
   transaction's day);
3. the member's current tier and ``tier_since`` when they differ from the last step known
   so far (reviews after the last transaction, requalifications): a ``review`` dated by
   ``tier_since`` when that restarted the hold, else by the last completed tier review.

Set-based: the program-local day of an instant is read from a small table of local
midnights (per program version, for the days the data spans) built here in Python, so
the same SQL runs on SQLite and PostgreSQL whatever the zone's offsets.
"""

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'tier_change',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('member_id', sa.Integer(), nullable=False),
        sa.Column('tier', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('effective_on', sa.Date(), nullable=False),
        sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column('recorded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('txn_id', sa.Integer(), nullable=True),
        sa.Column('job_run_id', sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "reason IN ('enrol', 'upgrade', 'review', 'merge', 'manual')",
            name=op.f('ck_tier_change_reason_known'),
        ),
        sa.ForeignKeyConstraint(
            ['job_run_id'], ['job_run.id'], name=op.f('fk_tier_change_job_run_id_job_run')
        ),
        sa.ForeignKeyConstraint(
            ['member_id'], ['member.id'], name=op.f('fk_tier_change_member_id_member')
        ),
        sa.ForeignKeyConstraint(['txn_id'], ['txn.id'], name=op.f('fk_tier_change_txn_id_txn')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_tier_change')),
    )
    with op.batch_alter_table('tier_change', schema=None) as batch_op:
        batch_op.create_index('ix_tier_change_member', ['member_id', 'effective_on'], unique=False)
    _backfill(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table('tier_change', schema=None) as batch_op:
        batch_op.drop_index('ix_tier_change_member')
    op.drop_table('tier_change')


# ---- back-fill ---------------------------------------------------------------------------

_temp = sa.MetaData()
_version_tier = sa.Table(
    'tmp_0002_version_tier',
    _temp,
    sa.Column('version_id', sa.Integer, primary_key=True),
    sa.Column('tier', sa.String(64), primary_key=True),
    sa.Column('rank', sa.Integer, nullable=False),
    prefixes=['TEMPORARY'],
)
_local_day = sa.Table(
    'tmp_0002_local_day',
    _temp,
    sa.Column('version_id', sa.Integer, primary_key=True),
    sa.Column('starts_at', sqlmodel.sql.sqltypes.UTCDateTime(), primary_key=True),
    sa.Column('day', sa.Date, nullable=False),
    prefixes=['TEMPORARY'],
)
_member_version = sa.Table(
    'tmp_0002_member_version',
    _temp,
    sa.Column('member_id', sa.Integer, primary_key=True),
    sa.Column('version_id', sa.Integer, nullable=False),
    prefixes=['TEMPORARY'],
)
_step = sa.Table(
    'tmp_0002_step',
    _temp,
    sa.Column('txn_id', sa.Integer, primary_key=True),
    sa.Column('member_id', sa.Integer, nullable=False),
    sa.Column('program_id', sa.Integer, nullable=False),
    sa.Column('tier', sa.String(64), nullable=False),
    sa.Column('day', sa.Date, nullable=False),
    sa.Column('prev_day', sa.Date, nullable=False),
    sa.Column('up', sa.Integer, nullable=False),
    sa.Column('recorded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    prefixes=['TEMPORARY'],
)


def _local_day_of(instant: str, version: str) -> str:
    """SQL: the program-local day of ``instant`` under the zone of ``version``."""
    return (
        f"(SELECT MAX(d.day) FROM tmp_0002_local_day d "
        f"WHERE d.version_id = {version} AND d.starts_at <= {instant})"
    )


def _bounds(conn: Any) -> tuple[date, date] | None:
    row = conn.execute(
        sa.text(
            "SELECT MIN(x), MAX(x) FROM ("
            " SELECT MIN(enrolled_at) AS x FROM member UNION ALL"
            " SELECT MAX(enrolled_at) FROM member UNION ALL"
            " SELECT MIN(occurred_at) FROM txn UNION ALL"
            " SELECT MAX(occurred_at) FROM txn) b"
        ).columns(sa.column('a', sqlmodel.sql.sqltypes.UTCDateTime()),
                  sa.column('b', sqlmodel.sql.sqltypes.UTCDateTime()))
    ).one()
    if row[0] is None:
        return None
    first, last = (_as_datetime(v) for v in row)
    return first.date() - timedelta(days=2), last.date() + timedelta(days=2)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite hands an aggregate back as text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _version_rows(conn: Any) -> list[tuple[int, str, list[str]]]:
    """(version id, zone, tier keys lowest first) of every program version."""
    found = []
    for version_id, spec in conn.execute(sa.text("SELECT id, spec FROM program_version")):
        data = json.loads(spec)
        zone = (data.get('program') or {}).get('timezone') or 'UTC'
        levels = (data.get('tiers') or {}).get('levels') or []
        found.append((int(version_id), zone, [level['key'] for level in levels]))
    return found


def _backfill(conn: Any) -> None:
    bounds = _bounds(conn)
    if bounds is None:
        return
    versions = _version_rows(conn)
    _temp.create_all(conn)
    first, last = bounds
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    for version_id, zone, keys in versions:
        tz = ZoneInfo(zone)
        if keys:
            conn.execute(
                sa.insert(_version_tier),
                [{'version_id': version_id, 'tier': k, 'rank': i} for i, k in enumerate(keys)],
            )
        conn.execute(
            sa.insert(_local_day),
            [
                {
                    'version_id': version_id,
                    'starts_at': datetime.combine(day, time(), tzinfo=tz).astimezone(UTC),
                    'day': day,
                }
                for day in days
            ],
        )
    # The version in force at enrolment: the latest loaded by then, else the first.
    conn.execute(
        sa.text(
            "INSERT INTO tmp_0002_member_version (member_id, version_id) "
            "SELECT m.id, COALESCE("
            " (SELECT v.id FROM program_version v WHERE v.program_id = m.program_id"
            "  AND v.loaded_at <= m.enrolled_at ORDER BY v.loaded_at DESC, v.id DESC LIMIT 1),"
            " (SELECT MIN(v.id) FROM program_version v WHERE v.program_id = m.program_id)) "
            "FROM member m"
        )
    )
    # 1. Enrolment.
    conn.execute(
        sa.text(
            "INSERT INTO tier_change (member_id, tier, effective_on, reason, recorded_at) "
            "SELECT m.id, COALESCE((SELECT r.tier FROM tmp_0002_version_tier r"
            "  WHERE r.version_id = mv.version_id AND r.rank = 0), m.tier), "
            f"{_local_day_of('m.enrolled_at', 'mv.version_id')}, 'enrol', m.enrolled_at "
            "FROM member m JOIN tmp_0002_member_version mv ON mv.member_id = m.id "
            "ORDER BY m.id"
        )
    )
    # 2. Changes visible along each member's transactions.
    rank = (
        "COALESCE((SELECT r.rank FROM tmp_0002_version_tier r"
        " WHERE r.version_id = c.program_version_id AND r.tier = {0}), 0)"
    )
    before = "COALESCE(c.before, e.tier)"
    conn.execute(
        sa.text(
            "INSERT INTO tmp_0002_step "
            "(txn_id, member_id, program_id, tier, day, prev_day, up, recorded_at) "
            "SELECT c.id, c.member_id, c.program_id, c.tier_after, "
            f"{_local_day_of('c.occurred_at', 'c.program_version_id')}, "
            f"COALESCE({_local_day_of('c.before_at', 'c.program_version_id')}, e.effective_on), "
            f"CASE WHEN {rank.format('c.tier_after')} > {rank.format(before)} THEN 1 ELSE 0 END, "
            "c.recorded_at "
            "FROM (SELECT t.id, t.member_id, t.program_id, t.tier_after, t.occurred_at,"
            " t.recorded_at, t.program_version_id,"
            " LAG(t.tier_after) OVER (PARTITION BY t.member_id ORDER BY t.occurred_at, t.id)"
            "  AS before,"
            " LAG(t.occurred_at) OVER (PARTITION BY t.member_id ORDER BY t.occurred_at, t.id)"
            "  AS before_at"
            " FROM txn t WHERE t.tier_after <> '') c "
            "JOIN tier_change e ON e.member_id = c.member_id AND e.reason = 'enrol' "
            f"WHERE c.tier_after <> {before}"
        )
    )
    review_between = (
        "(SELECT MAX(j.as_of) FROM job_run j WHERE j.program_id = s.program_id"
        " AND j.job = 'tiers' AND j.status = 'done'"
        " AND j.as_of >= s.prev_day AND j.as_of <= s.day)"
    )
    conn.execute(
        sa.text(
            "INSERT INTO tier_change (member_id, tier, effective_on, reason, recorded_at, txn_id) "
            "SELECT s.member_id, s.tier, "
            f"CASE WHEN s.up = 1 THEN s.day ELSE COALESCE({review_between}, s.day) END, "
            "CASE WHEN s.up = 1 THEN 'upgrade' ELSE 'review' END, s.recorded_at, "
            "CASE WHEN s.up = 1 THEN s.txn_id END "
            "FROM tmp_0002_step s ORDER BY s.member_id, s.day, s.txn_id"
        )
    )
    # 3. The member row against the last step known: later reviews and requalifications.
    last_review = (
        "(SELECT MAX(j.as_of) FROM job_run j WHERE j.program_id = m.program_id"
        " AND j.job = 'tiers' AND j.status = 'done' AND j.as_of >= l.effective_on)"
    )
    effective = (
        f"CASE WHEN m.tier <> l.tier THEN COALESCE({last_review}, m.tier_since, l.effective_on)"
        " ELSE m.tier_since END"
    )
    conn.execute(
        sa.text(
            "INSERT INTO tier_change (member_id, tier, effective_on, reason, recorded_at) "
            "SELECT m.id, m.tier, "
            f"CASE WHEN {effective} < l.effective_on THEN l.effective_on ELSE {effective} END, "
            "'review', m.updated_at "
            "FROM member m JOIN (SELECT member_id, tier, effective_on,"
            " ROW_NUMBER() OVER (PARTITION BY member_id ORDER BY effective_on DESC, id DESC)"
            "  AS n FROM tier_change) l ON l.member_id = m.id AND l.n = 1 "
            "WHERE m.tier <> l.tier"
            " OR (m.tier_since IS NOT NULL AND m.tier_since > l.effective_on) "
            "ORDER BY m.id"
        )
    )
    _temp.drop_all(conn)
