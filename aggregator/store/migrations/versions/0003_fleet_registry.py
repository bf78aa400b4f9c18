"""fleet registry: stations, the station of each plug-in session, one open session per vehicle

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('station',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('site', sa.Integer(), nullable=False),
    sa.Column('max_charge_kw', sa.Float(), nullable=False),
    sa.Column('max_discharge_kw', sa.Float(), nullable=False),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('plugsession', schema=None) as batch_op:
        batch_op.add_column(sa.Column('station_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('closed_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.create_index(batch_op.f('ix_plugsession_station_id'), ['station_id'], unique=False)
    # Sessions left open by earlier versions (every restart opened new ones): keep the newest per vehicle.
    op.execute("UPDATE plugsession SET left_at = arrived_at, closed_reason = 'reconciled' "
               "WHERE left_at IS NULL AND id NOT IN (SELECT max(id) FROM plugsession WHERE left_at IS NULL "
               "GROUP BY vehicle_id)")
    op.create_index('one_open_session_per_vehicle', 'plugsession', ['vehicle_id'], unique=True,
                    sqlite_where=sa.text('left_at IS NULL'), postgresql_where=sa.text('left_at IS NULL'))


def downgrade() -> None:
    op.drop_index('one_open_session_per_vehicle', table_name='plugsession')
    with op.batch_alter_table('plugsession', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plugsession_station_id'))
        batch_op.drop_column('closed_reason')
        batch_op.drop_column('station_id')
    op.drop_table('station')
