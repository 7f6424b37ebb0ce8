"""De-identification crosswalk: random pseudonyms per patient and pseudonym namespace.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhirfus.db.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deid_crosswalk",
        sa.Column("namespace", sa.String(64), primary_key=True),
        sa.Column("patient_id", sa.String(64), primary_key=True),
        sa.Column("pseudonym", sa.String(32), nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.UniqueConstraint("namespace", "pseudonym", name="uq_deid_crosswalk_pseudonym"),
    )


def downgrade() -> None:
    op.drop_table("deid_crosswalk")
