"""wide points

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00

Points, balances, debts, lot remainders and job totals become BIGINT on PostgreSQL,
whose INTEGER stops at 2,147,483,647: a program that gives 100 points per unit of
currency reaches that on one member's large purchases or on a night's expiry total.
SQLite's INTEGER is already 64-bit, so nothing changes there. Also adds
``voucher.use_ref``, the till's reference of ``reward use --ref``.

PostgreSQL rewrites each table (and its indexes) once; on a large database run
`loyaltyctl db upgrade` in a quiet hour.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDE: dict[str, tuple[str, ...]] = {
    'member': ('balance', 'debt'),
    'txn': ('points', 'balance_after', 'qual_points'),
    'points_lot': ('points', 'remaining'),
    'points_entry': ('points',),
    'voucher': ('points',),
    'job_run': ('members', 'points', 'upgraded', 'downgraded'),
}


def _alter(old: sa.types.TypeEngine, new: sa.types.TypeEngine) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table, columns in WIDE.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(
                    column, existing_type=old, type_=new, existing_nullable=False
                )


def upgrade() -> None:
    _alter(sa.Integer(), sa.BigInteger())
    # `reward use VOUCHER --ref REF`: the till's reference, so that a retry is a duplicate.
    with op.batch_alter_table('voucher', schema=None) as batch_op:
        batch_op.add_column(sa.Column('use_ref', sa.String(length=200), nullable=True))
        batch_op.create_index('ix_voucher_use_ref', ['program_id', 'use_ref'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('voucher', schema=None) as batch_op:
        batch_op.drop_index('ix_voucher_use_ref')
        batch_op.drop_column('use_ref')
    _alter(sa.BigInteger(), sa.Integer())
