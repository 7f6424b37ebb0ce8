"""One rule for a site code wherever one is accepted: people, clients, identity-provider
provisioning and site-file imports refuse what a ``site`` column cannot hold or a label cannot
carry with a 400 naming ``site`` (never a database error), and write nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from auth_helpers import new_key, public_jwk
from sqlalchemy import func, select

from fhirfus.auth import clients, people
from fhirfus.db.tables import auth_clients, auth_people
from fhirfus.errors import InvalidRequest
from fhirfus.ingest.plan import plan_import
from fhirfus.store.repository import Store

BAD_SITES = ["x" * 65, "x" * 5000, "a b", "site/a", "ä", "a\x00", "*"]
GOOD_SITES = ["A", "site-a.2_b", "x" * 64]


@pytest.fixture
def store(database) -> Store:
    return Store(database.engine)


def _add_person(store: Store, site: str) -> None:
    people.add_person(store, f"{abs(hash(site))}@site.example", "site", site)


def _register_client(store: Store, site: str) -> None:
    clients.register(store, f"client {abs(hash(site))}", "site", "system/*.cruds",
                     {"keys": [public_jwk(new_key(), "k", "RS384")]}, site)


def _provision(_store: Store, site: str) -> None:
    people.provisioning(f"site:{site}")


def _plan_import(store: Store, site: str) -> None:
    plan_import(store, "any mapping", site, [Path("absent.csv")])


#: Each way a site code comes in, and the element its refusal names.
WRITERS: dict[str, tuple[Callable[[Store, str], None], str]] = {
    "person": (_add_person, "site"), "client": (_register_client, "site"),
    "provisioning": (_provision, "FHIRFUS_OIDC_AUTO_PROVISION"), "site import": (_plan_import, "site")}


def _rows(store: Store) -> int:
    with store.reading() as conn:
        return sum(conn.execute(select(func.count()).select_from(table)).scalar_one()
                   for table in (auth_people, auth_clients))


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("site", BAD_SITES, ids=lambda s: repr(s[:12]))
def test_a_site_code_that_is_not_one_is_refused_naming_site(store: Store, writer: str, site: str) -> None:
    write, element = WRITERS[writer]
    before = _rows(store)
    with pytest.raises(InvalidRequest) as refused:
        write(store, site)
    assert refused.value.status == 400 and refused.value.issues[0].expression == (element,)
    assert _rows(store) == before


@pytest.mark.parametrize("site", GOOD_SITES)
def test_a_site_code_of_up_to_64_allowed_characters_is_taken(store: Store, site: str) -> None:
    suffix = f"{site}-{store.engine.dialect.name}"[-64:]
    _add_person(store, suffix)
    _register_client(store, suffix)
    assert people.provisioning(f"site:{site}") == ("site", site)


def test_an_email_longer_than_its_column_is_refused_naming_email(store: Store) -> None:
    with pytest.raises(InvalidRequest) as refused:
        people.add_person(store, "a" * 320 + "@site.example", "analyst")
    assert refused.value.issues[0].expression == ("email",)
