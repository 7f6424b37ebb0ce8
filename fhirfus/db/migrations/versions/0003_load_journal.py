"""Load journal for resumable ``fhirfus load``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhirfus.db.types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "load_journal",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("chunk", sa.Integer, primary_key=True),
        sa.Column("resources", sa.Integer, nullable=False),
        sa.Column("loaded_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("load_journal")
