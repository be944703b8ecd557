"""score_calibrations: raw box score → P(IoU ≥ 0.5), one fit per project and model version

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:44:56.197494

Add an entry to migrations/NOTES.md: why, risks, revision id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | Sequence[str] | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('score_calibrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('model_version', sa.String(length=100), nullable=False),
    sa.Column('knots', sa.JSON(), nullable=False),
    sa.Column('boxes', sa.Integer(), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.Column('fitted_from', sa.String(length=40), nullable=False),
    sa.Column('fitted_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_score_calibrations_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_score_calibrations')),
    sa.UniqueConstraint('project_id', 'model_version', name=op.f('uq_score_calibrations_project_id_model_version'))
    )
    with op.batch_alter_table('score_calibrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_score_calibrations_project_id'), ['project_id'], unique=False)


def downgrade() -> None:
    # The fits are lost; `calibrate-scores` (or the backend's next re-calibration) makes them again.
    with op.batch_alter_table('score_calibrations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_score_calibrations_project_id'))

    op.drop_table('score_calibrations')
