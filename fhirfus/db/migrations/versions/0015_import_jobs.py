"""Bulk ``$import`` jobs and their per-line errors.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhirfus.db.types import JsonDocument, UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("client_id", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("site", sa.String(64), nullable=True),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("request", JsonDocument, nullable=False),
        sa.Column("progress", JsonDocument, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(100), nullable=True),
        sa.Column("heartbeat", UTCDateTime, nullable=False),
        sa.Column("directory", sa.Text, nullable=True),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.Column("updated", UTCDateTime, nullable=False),
        sa.Column("expires", UTCDateTime, nullable=True),
    )
    op.create_index("ix_import_jobs_status", "import_jobs", ["status", "heartbeat"])
    op.create_table(
        "import_errors",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("import_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("input", sa.Integer, primary_key=True),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("outcome", JsonDocument, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("import_errors")
    op.drop_index("ix_import_jobs_status", table_name="import_jobs")
    op.drop_table("import_jobs")
