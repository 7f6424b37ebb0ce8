"""Resources (current versions) and their history.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhirfus.db.types import JsonDocument, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SurrogateKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("pk", SurrogateKey, primary_key=True, autoincrement=True),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_updated", UTCDateTime, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content", JsonDocument, nullable=True),
        sa.UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    )
    op.create_index("ix_resources_type_updated", "resources", ["res_type", "last_updated"])
    op.create_table(
        "resource_history",
        sa.Column("res_type", sa.String(64), primary_key=True),
        sa.Column("res_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("last_updated", UTCDateTime, nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("content", JsonDocument, nullable=True),
    )
    op.create_index("ix_history_updated", "resource_history", ["last_updated"])
    op.create_index("ix_history_type_updated", "resource_history", ["res_type", "last_updated"])


def downgrade() -> None:
    op.drop_index("ix_history_type_updated", table_name="resource_history")
    op.drop_index("ix_history_updated", table_name="resource_history")
    op.drop_table("resource_history")
    op.drop_index("ix_resources_type_updated", table_name="resources")
    op.drop_table("resources")
