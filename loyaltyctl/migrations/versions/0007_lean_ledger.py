"""lean ledger

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 22:00:00

The member ledger tables lose their foreign keys (``db check`` verifies each reference
instead) and the indexes no query reads; two indexes become partial:

- ``points_lot``: ``ix_points_lot_due (expires_on, remaining)`` becomes
  ``ix_points_lot_open (expires_on) WHERE remaining > 0`` (spent and expired lots drop
  out of it); ``ix_points_lot_txn_id`` goes (lots of a purchase are read through their
  member's index).
- ``points_entry``: ``ix_points_entry_lot_id`` and ``ix_points_entry_job_run_id`` go.
- ``txn``: ``ix_txn_original`` holds only the rows that name an original (returns).

SQLite cannot drop a foreign key in place, so it copies each of those tables once; on a
large database run `loyaltyctl db upgrade` in a quiet hour.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, referred table) of every foreign key that goes.
FOREIGN_KEYS: tuple[tuple[str, str, str], ...] = (
    ('txn', 'program_id', 'program'),
    ('txn', 'member_id', 'member'),
    ('txn', 'original_id', 'txn'),
    ('txn', 'program_version_id', 'program_version'),
    ('points_lot', 'member_id', 'member'),
    ('points_lot', 'txn_id', 'txn'),
    ('points_entry', 'member_id', 'member'),
    ('points_entry', 'txn_id', 'txn'),
    ('points_entry', 'job_run_id', 'job_run'),
    ('points_entry', 'lot_id', 'points_lot'),
    ('points_entry', 'program_version_id', 'program_version'),
    ('tier_change', 'member_id', 'member'),
    ('tier_change', 'txn_id', 'txn'),
    ('tier_change', 'job_run_id', 'job_run'),
    ('voucher', 'program_id', 'program'),
    ('voucher', 'member_id', 'member'),
    ('voucher', 'txn_id', 'txn'),
    ('voucher', 'cancel_txn_id', 'txn'),
    ('audit', 'member_id', 'member'),
)
# SQLite copies a table to change its keys (``store.migrate`` runs migrations with its
# key checks off and checks every key before commit).
TABLES = ('audit', 'voucher', 'tier_change', 'points_entry', 'points_lot', 'txn')


def _fk(table: str, column: str, referred: str) -> str:
    return f'fk_{table}_{column}_{referred}'


def _partial(condition: str) -> dict[str, sa.TextClause]:
    return {'sqlite_where': sa.text(condition), 'postgresql_where': sa.text(condition)}


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            for fk_table, column, referred in FOREIGN_KEYS:
                if fk_table == table:
                    batch_op.drop_constraint(_fk(table, column, referred), type_='foreignkey')
    with op.batch_alter_table('points_lot', schema=None) as batch_op:
        batch_op.drop_index('ix_points_lot_due')
        batch_op.drop_index('ix_points_lot_txn_id')
        batch_op.create_index('ix_points_lot_open', ['expires_on'], **_partial('remaining > 0'))
    with op.batch_alter_table('points_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_points_entry_lot_id')
        batch_op.drop_index('ix_points_entry_job_run_id')
    with op.batch_alter_table('txn', schema=None) as batch_op:
        batch_op.drop_index('ix_txn_original')
        batch_op.create_index(
            'ix_txn_original', ['original_id'], **_partial('original_id IS NOT NULL')
        )


def downgrade() -> None:
    with op.batch_alter_table('txn', schema=None) as batch_op:
        batch_op.drop_index('ix_txn_original')
        batch_op.create_index('ix_txn_original', ['original_id'])
    with op.batch_alter_table('points_entry', schema=None) as batch_op:
        batch_op.create_index('ix_points_entry_job_run_id', ['job_run_id'])
        batch_op.create_index('ix_points_entry_lot_id', ['lot_id'])
    with op.batch_alter_table('points_lot', schema=None) as batch_op:
        batch_op.drop_index('ix_points_lot_open')
        batch_op.create_index('ix_points_lot_txn_id', ['txn_id'])
        batch_op.create_index('ix_points_lot_due', ['expires_on', 'remaining'])
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for fk_table, column, referred in FOREIGN_KEYS:
                if fk_table == table:
                    batch_op.create_foreign_key(
                        _fk(table, column, referred), referred, [column], ['id']
                    )
