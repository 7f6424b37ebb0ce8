"""The schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create exactly this.

- ``resources``: the current version of every resource (deleted ones keep a tombstone row so
  that a read answers 410 and version numbers continue after a re-create).
- ``resource_history``: every version, including deletes (``content`` is NULL for those).
- ``search_*``: one table per search-parameter type, filled from the SearchParameter
  expressions when a resource is written, in the same transaction (``fhirfus.store.indexer``).
  Each row points at ``resources.pk`` and carries ``res_type`` and ``param`` so every lookup
  starts with an index range on (res_type, param, value).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Numeric,
    Text,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from fhirfus.store.types import JsonDocument, UTCDateTime

metadata = MetaData()

#: Surrogate keys: BIGINT on PostgreSQL, the rowid alias INTEGER on SQLite.
SurrogateKey = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("pk", SurrogateKey, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", UTCDateTime, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", JsonDocument, nullable=True),
    UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    Index("ix_resources_type_updated", "res_type", "last_updated"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("last_updated", UTCDateTime, nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", JsonDocument, nullable=True),
    Index("ix_history_updated", "last_updated"),
    Index("ix_history_type_updated", "res_type", "last_updated"),
)


def _index_table(name: str, *columns: Column, indexes: tuple[Index, ...] = ()) -> Table:
    """A search-index table: (resource_pk, res_type, param, value columns…)."""
    return Table(
        name,
        metadata,
        Column("resource_pk", SurrogateKey, ForeignKey("resources.pk", ondelete="CASCADE"), nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *columns,
        Index(f"ix_{name}_resource", "resource_pk"),
        *indexes,
    )


search_token = _index_table(
    "search_token",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text", Text, nullable=True),
    indexes=(Index("ix_search_token_code", "res_type", "param", "code", "system"),),
)

search_string = _index_table(
    "search_string",
    Column("value", Text, nullable=False),
    Column("exact", Text, nullable=False),
    indexes=(
        Index(
            "ix_search_string_value", "res_type", "param", "value",
            postgresql_ops={"value": "text_pattern_ops"},
        ),
    ),
)

search_date = _index_table(
    "search_date",
    Column("low", UTCDateTime, nullable=False),
    Column("high", UTCDateTime, nullable=False),
    indexes=(
        Index("ix_search_date_range", "res_type", "param", "low", "high"),
        Index("ix_search_date_high", "res_type", "param", "high"),
    ),
)

search_reference = _index_table(
    "search_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", Text, nullable=False),
    indexes=(
        Index("ix_search_reference_target", "res_type", "param", "target_id", "target_type"),
        Index("ix_search_reference_reverse", "target_type", "target_id"),
    ),
)

search_number = _index_table(
    "search_number",
    Column("value", Numeric, nullable=False),
    indexes=(Index("ix_search_number_value", "res_type", "param", "value"),),
)

search_quantity = _index_table(
    "search_quantity",
    Column("value", Numeric, nullable=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    indexes=(Index("ix_search_quantity_value", "res_type", "param", "value"),),
)

search_uri = _index_table(
    "search_uri",
    Column("value", Text, nullable=False),
    indexes=(
        Index("ix_search_uri_value", "res_type", "param", "value", postgresql_ops={"value": "text_pattern_ops"}),
    ),
)

INDEX_TABLES = (search_token, search_string, search_date, search_reference, search_number, search_quantity, search_uri)

#: ``fhirfus load`` progress: a chunk is recorded in the transaction that stores it, so a rerun
#: after an interruption skips exactly the chunks that are already in.
load_journal = Table(
    "load_journal",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("chunk", Integer, primary_key=True),
    Column("resources", Integer, nullable=False),
    Column("loaded_at", UTCDateTime, nullable=False),
)
