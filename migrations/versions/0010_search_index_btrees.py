"""Search-index B-trees: one for references in both directions; the match's key in the lookups.

- ``search_reference``: ``ix_search_reference_target`` (res_type, param, target_id, target_type)
  served searches by reference and ``ix_search_reference_reverse`` (target_type, target_id)
  reverse lookups. Both are keyed by random ids, so each inserted reference row paid two random
  B-tree insertions. ``ix_search_reference_by_target`` (target_id, target_type, res_type, param,
  resource_pk) answers both: a search knows the id too, and the type and parameter narrow it.
  References without a target id (canonicals, ``urn:``) get a partial B-tree on their URL,
  ``ix_search_reference_url``, for searches by URL.
- The token, string and date lookups end with ``resource_pk``: counting matches and picking a
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

#: (index, table, its columns before this revision (it adds resource_pk), dialect options)
WIDENED = (
    ("ix_search_token_code", "search_token", ["res_type", "param", "code", "system"], {}),
    ("ix_search_string_value", "search_string", ["res_type", "param", "value"], TEXT_PATTERN),
    ("ix_search_date_range", "search_date", ["res_type", "param", "low", "high"], {}),
)


def upgrade() -> None:
    op.create_index(
        "ix_search_reference_by_target", "search_reference",
        ["target_id", "target_type", "res_type", "param", "resource_pk"],
    )
    op.create_index(
        "ix_search_reference_url", "search_reference", ["res_type", "param", "url"],
        postgresql_where=sa.text("target_id IS NULL"), sqlite_where=sa.text("target_id IS NULL"),
    )
    op.drop_index("ix_search_reference_target", table_name="search_reference")
    op.drop_index("ix_search_reference_reverse", table_name="search_reference")
    for name, table, columns, options in WIDENED:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [*columns, "resource_pk"], **options)


def downgrade() -> None:
    for name, table, columns, options in WIDENED:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, columns, **options)
    op.create_index(
        "ix_search_reference_target", "search_reference", ["res_type", "param", "target_id", "target_type"]
    )
    op.create_index("ix_search_reference_reverse", "search_reference", ["target_type", "target_id"])
    op.drop_index("ix_search_reference_url", table_name="search_reference")
    op.drop_index("ix_search_reference_by_target", table_name="search_reference")
