"""One B-tree on ``search_reference`` for both directions, led by the target id.

``ix_search_reference_target`` (res_type, param, target_id, target_type) served searches by
reference and ``ix_search_reference_reverse`` (target_type, target_id) reverse lookups. Both are
keyed by random ids, so each inserted reference row paid two random B-tree insertions.
``ix_search_reference_by_target`` (target_id, target_type, res_type, param) answers both: a search
knows the id too, and the type and parameter narrow it within the id.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_search_reference_by_target", "search_reference", ["target_id", "target_type", "res_type", "param"]
    )
    op.drop_index("ix_search_reference_target", table_name="search_reference")
    op.drop_index("ix_search_reference_reverse", table_name="search_reference")


def downgrade() -> None:
    op.create_index(
        "ix_search_reference_target", "search_reference", ["res_type", "param", "target_id", "target_type"]
    )
    op.create_index("ix_search_reference_reverse", "search_reference", ["target_type", "target_id"])
    op.drop_index("ix_search_reference_by_target", table_name="search_reference")
