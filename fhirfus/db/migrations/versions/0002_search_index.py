"""Search-index tables: token, string, date, reference, number, quantity, uri.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from fhirfus.db.types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SurrogateKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

def _value_columns() -> dict[str, list[sa.Column]]:
    """Fresh Column objects per call (a Column can belong to one Table only)."""
    return {
        "search_token": [sa.Column("system", sa.Text), sa.Column("code", sa.Text), sa.Column("text", sa.Text)],
        "search_string": [sa.Column("value", sa.Text, nullable=False), sa.Column("exact", sa.Text, nullable=False)],
        "search_date": [sa.Column("low", UTCDateTime, nullable=False), sa.Column("high", UTCDateTime, nullable=False)],
        "search_reference": [
            sa.Column("target_type", sa.String(64)),
            sa.Column("target_id", sa.String(64)),
            sa.Column("url", sa.Text, nullable=False),
        ],
        "search_number": [sa.Column("value", sa.Numeric, nullable=False)],
        "search_quantity": [
            sa.Column("value", sa.Numeric, nullable=False),
            sa.Column("system", sa.Text),
            sa.Column("code", sa.Text),
        ],
        "search_uri": [sa.Column("value", sa.Text, nullable=False)],
    }

INDEXES: list[tuple[str, str, list[str], dict]] = [
    ("ix_search_token_code", "search_token", ["res_type", "param", "code", "system"], {}),
    ("ix_search_string_value", "search_string", ["res_type", "param", "value"],
     {"postgresql_ops": {"value": "text_pattern_ops"}}),
    ("ix_search_date_range", "search_date", ["res_type", "param", "low", "high"], {}),
    ("ix_search_date_high", "search_date", ["res_type", "param", "high"], {}),
    ("ix_search_reference_target", "search_reference", ["res_type", "param", "target_id", "target_type"], {}),
    ("ix_search_reference_reverse", "search_reference", ["target_type", "target_id"], {}),
    ("ix_search_number_value", "search_number", ["res_type", "param", "value"], {}),
    ("ix_search_quantity_value", "search_quantity", ["res_type", "param", "value"], {}),
    ("ix_search_uri_value", "search_uri", ["res_type", "param", "value"],
     {"postgresql_ops": {"value": "text_pattern_ops"}}),
]


def upgrade() -> None:
    for name, columns in _value_columns().items():
        op.create_table(
            name,
            sa.Column("resource_pk", SurrogateKey, nullable=False),
            sa.Column("res_type", sa.String(64), nullable=False),
            sa.Column("param", sa.String(100), nullable=False),
            *columns,
        )
        op.create_index(f"ix_{name}_resource", name, ["resource_pk"])
    for index_name, table, columns, options in INDEXES:
        op.create_index(index_name, table, columns, **options)


def downgrade() -> None:
    for index_name, table, _columns, _options in INDEXES:
        op.drop_index(index_name, table_name=table)
    for name in reversed(list(_value_columns())):
        op.drop_index(f"ix_{name}_resource", table_name=name)
        op.drop_table(name)
