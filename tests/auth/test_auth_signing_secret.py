"""The access-token signing secret shared by every process of a deployment (FHIRFUS_TOKEN_SECRET unset)."""

from __future__ import annotations

import uuid

import httpx
from auth_helpers import make_client
from conftest import serving
from sqlalchemy import select

from fhirfus.auth.signing_secret import shared_secret
from fhirfus.db import migrate
from fhirfus.db.tables import auth_secrets
from fhirfus.settings import Settings
from fhirfus.store.repository import Store


def test_token_from_one_instance_works_on_another_without_a_configured_secret(database) -> None:
    store = Store(database.engine)
    settings = Settings(database_url=database.url, auth="smart", token_secret=None)
    with serving(settings, store) as (first, _), serving(settings, store) as (second, _):
        client = make_client(store, first + "/auth/token", role="admin", scope="system/*.rs")
        headers = {"Authorization": f"Bearer {client.token()}"}
        assert httpx.get(second + "/fhir/Patient", params={"_count": 1}, headers=headers, timeout=30).status_code == 200
    with store.reading() as conn:
        stored = conn.execute(select(auth_secrets.c.value).where(auth_secrets.c.name == "access-token-hs256")).scalars().all()
    assert stored == [shared_secret(store)] and len(stored[0]) >= 32


def test_shared_secret_is_generated_once(fresh_database) -> None:
    migrate.upgrade(fresh_database.engine)
    store = Store(fresh_database.engine)
    made = iter(["first-" + uuid.uuid4().hex, "second-" + uuid.uuid4().hex])
    first = shared_secret(store, generate=lambda: next(made))
    assert shared_secret(store, generate=lambda: next(made)) == first and first.startswith("first-")
