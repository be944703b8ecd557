"""Annotations: an image annotated with a version, with boxes or none; "no detection" boxes removed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 02:29:49.436930

Add an entry to migrations/NOTES.md: why, risks, revision id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | Sequence[str] | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('annotations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('model_version', sa.String(length=100), nullable=False),
    sa.Column('boxes', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_annotations_image_id_images'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotations')),
    sa.UniqueConstraint('image_id', 'model_version', name=op.f('uq_annotations_image_id_model_version'))
    )
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_annotations_model_version'), ['model_version'], unique=False)

    # Every (image, version) with model boxes was annotated with that version.
    op.execute("INSERT INTO annotations (image_id, model_version, boxes, created_at) "
               "SELECT image_id, model_version, 0, MAX(created_at) FROM predictions WHERE source = 'model' "
               "GROUP BY image_id, model_version")
    # Earlier releases stored "no pixel survived τ" as a fake box: [0, 0, 1, 1] of the 512 frame scaled
    # to the image (x1 = y1 = 0) with score 0; a real box's score is its region's mean map value, > 0.
    op.execute("DELETE FROM predictions WHERE source = 'model' AND score = 0 AND x1 = 0 AND y1 = 0")
    op.execute("UPDATE annotations SET boxes = (SELECT COUNT(*) FROM predictions p WHERE p.image_id = "
               "annotations.image_id AND p.model_version = annotations.model_version AND p.source = 'model')")


def downgrade() -> None:
    # The removed "no detection" boxes are not restored: an image without a box is pending again.
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_annotations_model_version'))

    op.drop_table('annotations')
