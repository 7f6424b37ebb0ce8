"""Alembic migrations go up and down cleanly on both databases."""

from __future__ import annotations

from sqlalchemy import inspect

from fhirfus.store import migrate
from fhirfus.store.tables import metadata


def test_upgrade_creates_every_table(fresh_database) -> None:
    migrate.upgrade(fresh_database.engine)
    tables = set(inspect(fresh_database.engine).get_table_names())
    assert set(metadata.tables) <= tables
    assert migrate.current_revision(fresh_database.engine) == migrate.head_revision(fresh_database.engine)


def test_downgrade_to_base_removes_every_table(fresh_database) -> None:
    migrate.upgrade(fresh_database.engine)
    migrate.downgrade(fresh_database.engine, "base")
    tables = set(inspect(fresh_database.engine).get_table_names()) - {"alembic_version"}
    assert tables == set()
    assert migrate.current_revision(fresh_database.engine) is None


def test_upgrade_after_downgrade_round_trips(fresh_database) -> None:
    migrate.upgrade(fresh_database.engine)
    migrate.downgrade(fresh_database.engine, "base")
    migrate.upgrade(fresh_database.engine)
    assert set(metadata.tables) <= set(inspect(fresh_database.engine).get_table_names())


def test_schema_matches_table_definitions(fresh_database) -> None:
    """Migrations and ``fhirfus.store.tables`` describe the same columns."""
    migrate.upgrade(fresh_database.engine)
    inspector = inspect(fresh_database.engine)
    for name, table in metadata.tables.items():
        assert {c["name"] for c in inspector.get_columns(name)} == set(table.columns.keys()), name
