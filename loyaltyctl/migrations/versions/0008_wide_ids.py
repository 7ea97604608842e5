"""wide ids

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 23:55:00

The ids of the tables that grow with every purchase (transactions, lots, entries, tier
changes, vouchers, events, audit) and the columns that name them become BIGINT on
PostgreSQL, with their sequences: INTEGER stops at 2,147,483,647, which an airline-sized
program's entries reach in a few years, and writers on the nodes of a distributed
database need room for ids of their own (docs/scaling.md). SQLite's INTEGER is already
64-bit, so nothing changes there.

PostgreSQL rewrites each of those tables (and its indexes) once; on a large database run
`loyaltyctl db upgrade` in a quiet hour.
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Per table: its id (when it has a sequence) and the columns that hold such ids.
WIDE: dict[str, tuple[str, ...]] = {
    'txn': ('id', 'original_id'),
    'points_lot': ('id', 'txn_id'),
    'points_entry': ('id', 'txn_id', 'lot_id'),
    'tier_change': ('id', 'txn_id'),
    'voucher': ('id', 'txn_id', 'cancel_txn_id'),
    'event': ('id',),
    'event_cursor': ('last_id',),
    'audit': ('id',),
}


def _alter(type_: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'postgresql':
        return
    for table, columns in WIDE.items():
        changes = ', '.join(f'ALTER COLUMN {column} TYPE {type_}' for column in columns)
        op.execute(f'ALTER TABLE {table} {changes}')
        if 'id' in columns:
            sequence = bind.execute(
                text("SELECT pg_get_serial_sequence(:t, 'id')"), {'t': table}
            ).scalar_one()
            op.execute(f'ALTER SEQUENCE {sequence} AS {type_}')


def upgrade() -> None:
    _alter('bigint')


def downgrade() -> None:
    _alter('integer')
