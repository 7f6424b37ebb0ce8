"""Alembic migrations go up and down cleanly on both databases."""

from __future__ import annotations

from sqlalchemy import inspect

from fhirfus.db import migrate
from fhirfus.db.migrate import MIGRATIONS_DIR
from fhirfus.db.tables import metadata


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
    """Migrations and ``fhirfus.db.tables`` describe the same columns, in the same order, NULL where
    the other allows NULL (tables made by a factory, like the job tables, included)."""
    migrate.upgrade(fresh_database.engine)
    inspector = inspect(fresh_database.engine)
    for name, table in metadata.tables.items():
        created = [(c["name"], c["nullable"]) for c in inspector.get_columns(name)]
        declared = [(c.name, c.nullable) for c in table.columns]
        assert created == declared, name


def test_indexes_match_table_definitions(fresh_database) -> None:
    """Migrations create the B-trees ``fhirfus.db.tables`` declares, column for column."""
    migrate.upgrade(fresh_database.engine)
    inspector = inspect(fresh_database.engine)
    for name, table in metadata.tables.items():
        declared = {index.name: [c.name for c in index.columns] for index in table.indexes}
        created = {i["name"]: i["column_names"] for i in inspector.get_indexes(name) if i["name"] in declared}
        assert created == declared, name


def _migration(name: str):
    import importlib.util

    path = MIGRATIONS_DIR / "versions" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"migration_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_0008_lists_every_parameter_whose_rows_are_all_shared() -> None:
    from fhirfus.search.compiler import TABLE_OF
    from fhirfus.search.registry import _layout, params_for, resource_types

    shared = {
        (TABLE_OF[params_for(t)[code].type].name, t, code)
        for t in resource_types() for code, own in _layout(t).own_branches.items() if not own
    }
    assert set(_migration("0008_shared_index_rows").REDUNDANT) == shared


def test_migration_0008_drops_the_shared_rows_and_keeps_the_rest(fresh_database) -> None:
    from sqlalchemy import insert, select

    from fhirfus.db.tables import search_token

    migrate.upgrade(fresh_database.engine, "0007")
    row = {"resource_pk": 1, "res_type": "Observation", "system": "s", "code": "c", "text": None}
    with fresh_database.engine.begin() as conn:
        conn.execute(insert(search_token), [{**row, "param": "combo-code"}, {**row, "param": "code"}])
    migrate.upgrade(fresh_database.engine)
    with fresh_database.engine.connect() as conn:
        assert conn.execute(select(search_token.c.param)).scalars().all() == ["code"]


def test_migration_0009_lists_every_reference_parameter_stored_as_another_ones_rows() -> None:
    from fhirfus.search.registry import _layout, resource_types

    subsets = {(t, code) for t in resource_types() for code in _layout(t).reference_subsets}
    assert set(_migration("0009_reference_subset_rows").REDUNDANT) == subsets


def test_migration_0009_drops_the_subset_rows_and_keeps_the_holders(fresh_database) -> None:
    from sqlalchemy import insert, select

    from fhirfus.db.tables import search_reference

    migrate.upgrade(fresh_database.engine, "0008")
    row = {"resource_pk": 1, "res_type": "Observation", "target_type": "Patient", "target_id": "p", "url": "Patient/p"}
    with fresh_database.engine.begin() as conn:
        conn.execute(insert(search_reference), [{**row, "param": "patient"}, {**row, "param": "subject"}])
    migrate.upgrade(fresh_database.engine)
    with fresh_database.engine.connect() as conn:
        assert conn.execute(select(search_reference.c.param)).scalars().all() == ["subject"]


def test_migration_0012_keeps_clients_and_leaves_url_clients_an_empty_key_set(fresh_database) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import insert, select

    from fhirfus.auth import clients
    from fhirfus.db.tables import auth_clients
    from fhirfus.store.repository import Store

    jwks = {"keys": [{"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"}]}
    migrate.upgrade(fresh_database.engine, "0010")
    with fresh_database.engine.begin() as conn:
        conn.execute(insert(auth_clients).values(client_id="old", name="old", role="admin", site=None,
                                                 scope="system/*.rs", jwks=jwks, created_at=datetime.now(UTC)))
    migrate.upgrade(fresh_database.engine)
    old = clients.get(Store(fresh_database.engine), "old")
    assert old.jwks == jwks and old.jwks_url is None and old.enabled
    by_url = clients.register(Store(fresh_database.engine), "url", "admin", "system/*.rs",
                              jwks_url="https://keys.example/jwks.json")
    migrate.downgrade(fresh_database.engine, "0010")
    with fresh_database.engine.connect() as conn:
        rows = dict(conn.execute(select(auth_clients.c.client_id, auth_clients.c.jwks)).all())
    assert rows == {"old": jwks, by_url.client_id: {"keys": []}}
