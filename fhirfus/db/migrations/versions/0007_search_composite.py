"""Search-index table for composite parameters (``code-value-quantity`` and the like).

Also drops the index rows of ``_id`` and ``_lastUpdated``: searches read those from the
``resources`` columns, and new writes no longer index them.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhirfus.db.types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SurrogateKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "search_composite",
        sa.Column("resource_pk", SurrogateKey, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("param", sa.String(100), nullable=False),
        sa.Column("system1", sa.Text),
        sa.Column("code1", sa.Text),
        sa.Column("system2", sa.Text),
        sa.Column("code2", sa.Text),
        sa.Column("number2", sa.Numeric),
        sa.Column("low2", UTCDateTime),
        sa.Column("high2", UTCDateTime),
        sa.Column("text2", sa.Text),
        sa.Column("number3", sa.Numeric),
    )
    op.create_index("ix_search_composite_resource", "search_composite", ["resource_pk"])
    op.create_index("ix_search_composite_first", "search_composite", ["res_type", "param", "code1", "system1"])
    op.execute("DELETE FROM search_token WHERE param = '_id'")
    op.execute("DELETE FROM search_date WHERE param = '_lastUpdated'")


def downgrade() -> None:
    op.drop_index("ix_search_composite_first", table_name="search_composite")
    op.drop_index("ix_search_composite_resource", table_name="search_composite")
    op.drop_table("search_composite")
