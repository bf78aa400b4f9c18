"""cluster: partition leases (fencing tokens), the station command table, which instance holds each station's socket

Revision ID: 0008
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('partition_lease',
    sa.Column('partition', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('owner', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('fencing_token', sa.BigInteger(), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('partition')
    )
    op.create_table('station_command',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('partition', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('fencing_token', sa.BigInteger(), nullable=False),
    sa.Column('gateway', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('station_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('power_kw', sa.Float(), nullable=False),
    sa.Column('valid_from', sa.DateTime(timezone=True), nullable=False),
    sa.Column('valid_until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ack', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('detail', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('station_command', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_station_command_gateway'), ['gateway'], unique=False)
        batch_op.create_index(batch_op.f('ix_station_command_partition'), ['partition'], unique=False)

    op.create_table('station_connection',
    sa.Column('station_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('gateway', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('station_id')
    )
    with op.batch_alter_table('station_connection', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_station_connection_gateway'), ['gateway'], unique=False)

    op.create_table('station_event_relay',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('gateway', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('station_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('station_event_relay', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_station_event_relay_created_at'), ['created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('station_event_relay', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_station_event_relay_created_at'))
    op.drop_table('station_event_relay')
    with op.batch_alter_table('station_connection', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_station_connection_gateway'))

    op.drop_table('station_connection')
    with op.batch_alter_table('station_command', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_station_command_partition'))
        batch_op.drop_index(batch_op.f('ix_station_command_gateway'))

    op.drop_table('station_command')
    op.drop_table('partition_lease')
