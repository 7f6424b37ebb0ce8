"""Pull definitions of a hub (``fhirfus pull``): source, client, key, site label, watermark, status.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhirfus.db.types import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pull_definitions",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("source_url", sa.Text, nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("key_path", sa.Text, nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("group_id", sa.String(64), nullable=True),
        sa.Column("types", sa.Text, nullable=True),
        sa.Column("every_seconds", sa.Integer, nullable=True),
        sa.Column("since", sa.String(64), nullable=True),
        sa.Column("job_url", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("last_count", sa.Integer, nullable=False),
        sa.Column("last_run", UTCDateTime, nullable=True),
        sa.Column("next_run", UTCDateTime, nullable=True),
        sa.Column("created", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pull_definitions")
