"""one event record: the VEN's ven_event is the record of events; commitments reference it

Drops eventrecord / eventintervalrecord (a second copy of every event) and
creates commitment (what the fleet committed to per event piece, with the
baseline frozen when the event was first accepted).

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('eventintervalrecord', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_eventintervalrecord_event_id'))
    op.drop_table('eventintervalrecord')
    op.drop_table('eventrecord')

    op.create_table('commitment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('requested', sa.Float(), nullable=True),
    sa.Column('import_ceiling_kw', sa.Float(), nullable=True),
    sa.Column('baseline_kw', sa.Float(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(['event_id'], ['ven_event.event_id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('commitment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_commitment_event_id'), ['event_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('commitment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_commitment_event_id'))
    op.drop_table('commitment')

    op.create_table('eventrecord',
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('modification_number', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('signal_name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('signal_type', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('market_context', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('test_event', sa.Boolean(), nullable=False),
    sa.Column('opt_state', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('request_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    op.create_table('eventintervalrecord',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('uid', sa.Integer(), nullable=False),
    sa.Column('start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('requested', sa.Float(), nullable=False),
    sa.Column('import_ceiling_kw', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['eventrecord.event_id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'uid')
    )
    with op.batch_alter_table('eventintervalrecord', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eventintervalrecord_event_id'), ['event_id'], unique=False)
