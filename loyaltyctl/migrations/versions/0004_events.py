"""events for the CRM and the mailer, and the store of a transaction

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-08 10:00:00

Adds ``event`` (append-only: what happened, for other programs to read), ``event_cursor``
(how far each consumer has read) and a nullable ``txn.store`` (the shop or till a
transaction came from). Nothing is back-filled: the feed starts at the upgrade.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0004'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'event',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('program_id', sa.Integer(), nullable=False),
        sa.Column('member', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column('data', sa.Text(), nullable=False),
        sa.Column('once', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ['program_id'], ['program.id'], name=op.f('fk_event_program_id_program')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_event')),
    )
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index(
            'uq_event_once',
            ['program_id', 'type', 'member', 'once'],
            unique=True,
            sqlite_where=sa.text('once IS NOT NULL'),
            postgresql_where=sa.text('once IS NOT NULL'),
        )
    op.create_table(
        'event_cursor',
        sa.Column('consumer', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column('program_id', sa.Integer(), nullable=False),
        sa.Column('last_id', sa.Integer(), nullable=False),
        sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ['program_id'], ['program.id'], name=op.f('fk_event_cursor_program_id_program')
        ),
        sa.PrimaryKeyConstraint('consumer', 'program_id', name=op.f('pk_event_cursor')),
    )
    with op.batch_alter_table('txn', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('store', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table('txn', schema=None) as batch_op:
        batch_op.drop_column('store')
    op.drop_table('event_cursor')
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('uq_event_once')
    op.drop_table('event')
