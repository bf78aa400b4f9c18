"""bids: the bidding package's stored bid records

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bid',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('program', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('strategy', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('window_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('price_per_kw', sa.Float(), nullable=False),
    sa.Column('quantity_json', sa.Text(), nullable=False),
    sa.Column('forecast_json', sa.Text(), nullable=False),
    sa.Column('history_json', sa.Text(), nullable=False),
    sa.Column('params_json', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('bid', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bid_program'), ['program'], unique=False)
        batch_op.create_index(batch_op.f('ix_bid_window_start'), ['window_start'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('bid', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bid_window_start'))
        batch_op.drop_index(batch_op.f('ix_bid_program'))
    op.drop_table('bid')
