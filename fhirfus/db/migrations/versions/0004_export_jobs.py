"""Bulk Data $export jobs, their files, and their staged patient lists and _typeFilter matches.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhirfus.db.types import JsonDocument, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

SurrogateKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "export_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("group_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request_url", sa.Text, nullable=False),
        sa.Column("params", JsonDocument, nullable=False),
        sa.Column("transaction_time", UTCDateTime, nullable=True),
        sa.Column("progress", sa.Integer, nullable=False),
        sa.Column("percent", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("owner", sa.String(100), nullable=True),
        sa.Column("heartbeat", UTCDateTime, nullable=False),
        sa.Column("directory", sa.Text, nullable=True),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.Column("updated", UTCDateTime, nullable=False),
        sa.Column("expires", UTCDateTime, nullable=True),
    )
    op.create_index("ix_export_jobs_status", "export_jobs", ["status", "heartbeat"])
    op.create_index("ix_export_jobs_owner", "export_jobs", ["owner", "status"])
    op.create_table(
        "export_files",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("export_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "export_job_patients",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("export_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("patient_id", sa.String(64), primary_key=True),
    )
    op.create_table(
        "export_job_matches",
        sa.Column("job_id", sa.String(36), sa.ForeignKey("export_jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("resource_pk", SurrogateKey, primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("export_job_matches")
    op.drop_table("export_job_patients")
    op.drop_table("export_files")
    op.drop_index("ix_export_jobs_owner", table_name="export_jobs")
    op.drop_index("ix_export_jobs_status", table_name="export_jobs")
    op.drop_table("export_jobs")
