"""The schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create exactly this.

- ``resources``: the current version of every resource (deleted ones keep a tombstone row so
  that a read answers 410 and version numbers continue after a re-create).
- ``resource_history``: every version, including deletes (``content`` is NULL for those).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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
