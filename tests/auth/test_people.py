"""People accounts (``fhirfus.auth.people``) and ``fhirfus users …``: the one-time link, argon2id
passwords, sessions that end, a person as an ``Access`` with the client role and site model."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from fhirfus.auth import people, totp
from fhirfus.cli import app as cli_app
from fhirfus.db import migrate
from fhirfus.db.tables import auth_people
from fhirfus.db.visibility import EVERYTHING, NOWHERE
from fhirfus.errors import InvalidRequest, Unauthorized
from fhirfus.settings import get_settings
from fhirfus.store.repository import Store

PASSWORD = "a long enough password"


@pytest.fixture
def store(fresh_database) -> Store:
    migrate.upgrade(fresh_database.engine)
    return Store(fresh_database.engine)


def test_a_person_is_an_access_with_the_role_and_site_of_the_account(store: Store) -> None:
    coordinator, _ = people.add_person(store, "Coord@Site-A.example", "site", "A")
    assert coordinator.email == "coord@site-a.example"
    access = people.access_for(coordinator)
    assert (access.client_id, access.role, access.site) == ("person:coord@site-a.example", "site", "A")
    assert access.visibility.site == "A" and access.allows("Patient", "r")
    analyst = people.access_for(people.add_person(store, "an@x.example", "analyst")[0])
    assert not analyst.allows("Patient", "r") and analyst.visibility == EVERYTHING
    assert people.access_for(people.Person("p", "e@x.example", "site", None, True, datetime.now(UTC))).visibility \
        == NOWHERE  # a site person without a site sees nothing


@pytest.mark.parametrize(("email", "role", "site", "element"), [
    ("not-an-email", "site", "A", "email"), ("a@x.example", "owner", None, "role"),
    ("a@x.example", "site", None, "site"), ("a@x.example", "analyst", "A", "site")])
def test_an_account_is_refused_naming_the_wrong_field(store: Store, email: str, role: str, site: str | None,
                                                      element: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        people.add_person(store, email, role, site)
    assert refused.value.issues[0].expression == (element,)


def test_the_setup_token_works_once_and_expires(store: Store) -> None:
    person, token = people.add_person(store, "a@x.example", "admin")
    with pytest.raises(InvalidRequest):
        people.set_password(store, token, "short")
    people.set_password(store, token, PASSWORD)
    with pytest.raises(Unauthorized):
        people.set_password(store, token, PASSWORD)
    assert people.authenticate(store, "a@x.example", PASSWORD).person_id == person.person_id
    late = people.reset_link_token(store, "a@x.example")
    with store.writing() as conn:
        conn.execute(update(auth_people).values(setup_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(Unauthorized):
        people.person_for_setup(store, late)


def test_sessions_end_on_logout_on_disable_and_on_a_new_password(store: Store) -> None:
    person, token = people.add_person(store, "a@x.example", "admin")
    people.set_password(store, token, PASSWORD)
    cookie, session = people.open_session(store, person)
    found = people.session_for(store, cookie)
    assert found is not None and (found.person.person_id, found.csrf) == (person.person_id, session.csrf)
    people.close_session(store, cookie)
    assert people.session_for(store, cookie) is None
    cookie, _ = people.open_session(store, person)
    people.set_enabled(store, "a@x.example", False)
    assert people.session_for(store, cookie) is None
    with pytest.raises(people.LoginFailed):
        people.authenticate(store, "a@x.example", PASSWORD)
    people.set_enabled(store, "a@x.example", True)
    cookie, _ = people.open_session(store, person)
    people.set_password(store, people.reset_link_token(store, "a@x.example"), PASSWORD + "!")
    assert people.session_for(store, cookie) is None


@pytest.fixture
def cli(fresh_database, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    monkeypatch.setenv("FHIRFUS_DATABASE_URL", fresh_database.url)
    monkeypatch.setenv("FHIRFUS_BASE_URL", "https://fhirfus.example/fhir")
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(cli_app, list(args))
    get_settings.cache_clear()


def test_users_add_prints_a_first_login_link_that_sets_the_password(cli, fresh_database) -> None:
    added = cli("users", "add", "--email", "coord@site-a.example", "--role", "site", "--site", "A")
    assert added.exit_code == 0, added.output
    link = added.stdout.strip().splitlines()[-1]
    assert link.startswith("https://fhirfus.example/app/setup?token=")
    store = Store(fresh_database.engine)
    people.set_password(store, link.partition("token=")[2], PASSWORD)
    assert people.authenticate(store, "coord@site-a.example", PASSWORD).site == "A"
    listed = cli("users", "list")
    assert "coord@site-a.example\tsite\tA\tenabled\tpassword set" in listed.stdout
    again = cli("users", "add", "--email", "coord@site-a.example", "--role", "site", "--site", "A")
    assert again.exit_code == 2 and "exists already" in again.output
    assert cli("users", "add", "--email", "x@y.example", "--role", "site").exit_code == 2


# --- the second factor ---------------------------------------------------------------------------

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize(("moment", "code"), [(59, "94287082"), (1111111109, "07081804"), (2000000000, "69279037")])
def test_totp_codes_are_those_of_rfc_6238(moment: int, code: str) -> None:
    assert totp.code_at(RFC_SECRET, totp.current_step(moment), digits=8) == code


def test_a_code_is_accepted_near_its_time_only() -> None:
    secret = totp.new_secret()
    now = 1_700_000_000.0
    code = totp.code_at(secret, totp.current_step(now))
    assert totp.matching_step(secret, code, now + 30) == totp.current_step(now)
    assert totp.matching_step(secret, code, now + 90) is None
    assert totp.matching_step(secret, "12345", now) is None


def test_with_a_second_factor_login_needs_a_fresh_code_used_once(store: Store) -> None:
    person, token = people.add_person(store, "a@x.example", "admin")
    people.set_password(store, token, PASSWORD)
    secret = totp.new_secret()
    with pytest.raises(InvalidRequest):
        people.enable_totp(store, person, secret, "000000" if totp.code_at(secret, totp.current_step()) != "000000"
                           else "111111")
    people.enable_totp(store, person, secret, totp.code_at(secret, totp.current_step()))
    with pytest.raises(people.LoginFailed):
        people.authenticate(store, "a@x.example", PASSWORD)  # no code
    with pytest.raises(people.LoginFailed):
        people.authenticate(store, "a@x.example", PASSWORD, totp.code_at(secret, totp.current_step()))  # used on enabling
    later = totp.code_at(secret, totp.current_step() + 1)
    assert people.authenticate(store, "a@x.example", PASSWORD, later).has_totp
    with pytest.raises(people.LoginFailed):
        people.authenticate(store, "a@x.example", PASSWORD, later)  # replayed


def test_a_provider_login_opens_an_account_only_as_the_setting_says_and_never_an_admin(store: Store) -> None:
    with pytest.raises(people.NotRegistered, match="an admin registers the email first"):
        people.person_for_email(store, "first@hospital.example")
    assert "first@hospital.example" not in {p.email for p in people.list_people(store)}
    opened = people.person_for_email(store, "First@Hospital.example", people.provisioning("site:A"))
    assert (opened.email, opened.role, opened.site, opened.has_password) == ("first@hospital.example", "site", "A", False)
    again = people.person_for_email(store, "first@hospital.example", people.provisioning("analyst"))
    assert again.person_id == opened.person_id and again.role == "site"  # an existing account keeps its role
    assert people.provisioning(None) is None and people.provisioning("") is None
    for wrong in ("admin", "site", "analyst:A", "site:A B"):
        with pytest.raises(InvalidRequest, match="FHIRFUS_OIDC_AUTO_PROVISION"):
            people.provisioning(wrong)
