"""site: sites with their grid limits (aggregator/sites); programme_enrollment: the programmes
(market contexts) the VEN is enrolled in besides the configured primary one (aggregator/programmes)

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('site',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('import_limit_kw', sa.Float(), nullable=True),
    sa.Column('export_limit_kw', sa.Float(), nullable=True),
    sa.Column('notes', sa.Text(), server_default='', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('programme_enrollment',
    sa.Column('market_context', sa.Text(), nullable=False),
    sa.Column('enrolled', sa.Boolean(), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('market_context')
    )


def downgrade() -> None:
    op.drop_table('programme_enrollment')
    op.drop_table('site')
