"""plugsession: the driver's choices (opt-out, boost target and end, session reserve) survive a restart

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('plugsession', schema=None) as batch_op:
        batch_op.add_column(sa.Column('opt_out', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('boost_kwh', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('boost_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('reserve_kwh', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('plugsession', schema=None) as batch_op:
        batch_op.drop_column('reserve_kwh')
        batch_op.drop_column('boost_until')
        batch_op.drop_column('boost_kwh')
        batch_op.drop_column('opt_out')
