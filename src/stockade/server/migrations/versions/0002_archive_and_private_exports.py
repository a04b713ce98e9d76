"""clusters.archived_at (clusters deleted without purging keep their alerts), exports.allow_private and
recommendations.objects

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch_op:
        batch_op.add_column(sa.Column("archived_at", sa.Float(), nullable=True))
    with op.batch_alter_table("exports") as batch_op:
        batch_op.add_column(sa.Column("allow_private", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("recommendations") as batch_op:
        batch_op.add_column(sa.Column("objects", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("recommendations") as batch_op:
        batch_op.drop_column("objects")
    with op.batch_alter_table("exports") as batch_op:
        batch_op.drop_column("allow_private")
    with op.batch_alter_table("clusters") as batch_op:
        batch_op.drop_column("archived_at")
