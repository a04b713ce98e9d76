"""identity_profiles, identity_profile_values and identity_profile_resets: the audit collectors' learned
behaviour per identity (`stockade audit serve --profiles server`)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _cluster() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("cluster_id", sa.Integer(), sa.ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "identity_profiles",
        _cluster(),
        sa.Column("identity", sa.String(length=300), nullable=False),
        sa.Column("first_seen", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("too_varied", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("cluster_id", "identity"),
    )
    op.create_table(
        "identity_profile_values",
        _cluster(),
        sa.Column("identity", sa.String(length=300), nullable=False),
        sa.Column("dim", sa.String(length=20), nullable=False),
        sa.Column("value", sa.String(length=300), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("cluster_id", "identity", "dim", "value"),
    )
    op.create_table(
        "identity_profile_resets",
        _cluster(),
        sa.Column("identity", sa.String(length=300), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("cluster_id", "identity"),
    )


def downgrade() -> None:
    op.drop_table("identity_profile_resets")
    op.drop_table("identity_profile_values")
    op.drop_table("identity_profiles")
