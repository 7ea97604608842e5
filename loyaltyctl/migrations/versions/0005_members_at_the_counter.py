"""members at the counter: search keys, the audit table

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 10:00:00

Adds ``member.email_key`` (the e-mail lower-cased) and ``member.phone_rev`` (the phone's
digits reversed), indexed per program, for ``member find``, back-filled from the members'
data (erased members have none); and the ``audit`` table (who changed what).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email_key', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(
            sa.Column('phone_rev', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True)
        )
        batch_op.create_index('ix_member_email_key', ['program_id', 'email_key'], unique=False)
        batch_op.create_index('ix_member_phone_rev', ['program_id', 'phone_rev'], unique=False)
    op.create_table(
        'audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column('command', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('program_id', sa.Integer(), nullable=True),
        sa.Column('member_id', sa.Integer(), nullable=True),
        sa.Column('ref', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column('summary', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_audit_member_id_member')),
        sa.ForeignKeyConstraint(
            ['program_id'], ['program.id'], name=op.f('fk_audit_program_id_program')
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_audit')),
    )
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.create_index('ix_audit_at', ['at'], unique=False)
        batch_op.create_index('ix_audit_member', ['member_id', 'at'], unique=False)
    _backfill(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_member')
        batch_op.drop_index('ix_audit_at')
    op.drop_table('audit')
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.drop_index('ix_member_phone_rev')
        batch_op.drop_index('ix_member_email_key')
        batch_op.drop_column('phone_rev')
        batch_op.drop_column('email_key')


def _backfill(conn: sa.Connection) -> None:
    from loyaltyctl.rules.search import email_key, phone_rev

    rows = conn.execute(
        sa.text("SELECT id, email, phone FROM member WHERE email IS NOT NULL OR phone IS NOT NULL")
    ).all()
    updates = [{'e': email_key(e), 'p': phone_rev(p), 'i': i} for i, e, p in rows]
    if updates:
        conn.execute(
            sa.text("UPDATE member SET email_key = :e, phone_rev = :p WHERE id = :i"), updates
        )
