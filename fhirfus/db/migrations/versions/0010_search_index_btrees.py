"""Search-index B-trees: one for references in both directions; the match's key in the string lookup.

- ``search_reference``: ``ix_search_reference_target`` (res_type, param, target_id, target_type)
  served searches by reference and ``ix_search_reference_reverse`` (target_type, target_id)
  reverse lookups. Both are keyed by random ids, so each inserted reference row paid two random
  B-tree insertions. ``ix_search_reference_by_target`` (target_id, target_type, res_type, param)
  answers both: a search knows the id too, and the type and parameter narrow it.
  References without a target id (canonicals, ``urn:``) get a partial B-tree on their URL,
  ``ix_search_reference_url``, for searches by URL.
- The string lookup ends with ``resource_pk``: counting a name prefix's matches and picking a
  page's keys then read the B-tree alone (index-only scans).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TEXT_PATTERN = {"postgresql_ops": {"value": "text_pattern_ops"}}
STRING_LOOKUP = ["res_type", "param", "value"]


def upgrade() -> None:
    op.create_index("ix_search_reference_by_target", "search_reference", ["target_id", "target_type", "res_type", "param"])
    op.create_index(
        "ix_search_reference_url", "search_reference", ["res_type", "param", "url"],
        postgresql_where=sa.text("target_id IS NULL"), sqlite_where=sa.text("target_id IS NULL"),
    )
    op.drop_index("ix_search_reference_target", table_name="search_reference")
    op.drop_index("ix_search_reference_reverse", table_name="search_reference")
    op.drop_index("ix_search_string_value", table_name="search_string")
    op.create_index("ix_search_string_value", "search_string", [*STRING_LOOKUP, "resource_pk"], **TEXT_PATTERN)


def downgrade() -> None:
    op.drop_index("ix_search_string_value", table_name="search_string")
    op.create_index("ix_search_string_value", "search_string", STRING_LOOKUP, **TEXT_PATTERN)
    op.create_index(
        "ix_search_reference_target", "search_reference", ["res_type", "param", "target_id", "target_type"]
    )
    op.create_index("ix_search_reference_reverse", "search_reference", ["target_type", "target_id"])
    op.drop_index("ix_search_reference_url", table_name="search_reference")
    op.drop_index("ix_search_reference_by_target", table_name="search_reference")
