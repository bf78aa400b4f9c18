"""ven_report_outbox: the VEN's outgoing report queue, persisted so a restart still delivers what is owed

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ven_report_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('vtn_url', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('report_request_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('queued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('report_json', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('ven_report_outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ven_report_outbox_vtn_url'), ['vtn_url'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ven_report_outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ven_report_outbox_vtn_url'))
    op.drop_table('ven_report_outbox')
