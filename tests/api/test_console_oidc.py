"""OpenID Connect login to the console against a small identity provider of the test's own: the
provider says who the person is (a verified email), the console's account says what they may do."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import jwt
import pytest
import uvicorn
from conftest import serving
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from fhirfus.auth import people
from fhirfus.settings import Settings
from fhirfus.store.repository import Store
from fhirfus.testing import free_port
from tests.api.test_console import PASSWORD, csrf, person


class FakeProvider:
    """Authorizes at once as ``self.email``; the ID token carries the nonce it was given, unless told
    otherwise; ``logout``: it publishes an ``end_session_endpoint`` and ends its session there."""

    def __init__(self, logout: bool = False) -> None:
        self.logout = logout
        self.logged_out: list[dict[str, str]] = []
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.email = ""
        self.nonce_override: str | None = None
        self.codes: dict[str, dict[str, str]] = {}
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.app = Starlette(routes=[
            Route("/.well-known/openid-configuration", self.configuration), Route("/authorize", self.authorize),
            Route("/token", self.token, methods=["POST"]), Route("/jwks", self.jwks), Route("/logout", self.end_session)])

    async def configuration(self, request: Request) -> JSONResponse:
        found = {"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                 "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks"}
        if self.logout:
            found["end_session_endpoint"] = f"{self.issuer}/logout"
        return JSONResponse(found)

    async def end_session(self, request: Request) -> RedirectResponse:
        self.logged_out.append(dict(request.query_params))
        return RedirectResponse(request.query_params["post_logout_redirect_uri"], 303)

    async def authorize(self, request: Request) -> RedirectResponse:
        q = request.query_params
        code = uuid.uuid4().hex
        self.codes[code] = {"nonce": q["nonce"], "challenge": q["code_challenge"], "client": q["client_id"]}
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", 303)

    async def token(self, request: Request) -> JSONResponse:
        form = await request.form()
        grant = self.codes.pop(str(form["code"]), None)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if grant is None or challenge != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant"}, 400)
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "aud": grant["client"], "sub": self.email, "iat": now,
                                  "exp": now + 300, "nonce": self.nonce_override or grant["nonce"],
                                  "email": self.email, "email_verified": True}
        return JSONResponse({"id_token": jwt.encode(claims, self.key, "RS256", headers={"kid": "k1"}),
                             "token_type": "Bearer", "access_token": "x"})

    async def jwks(self, request: Request) -> JSONResponse:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return JSONResponse({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})


def running(fake: FakeProvider) -> Iterator[FakeProvider]:
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=fake.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield fake
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    yield from running(FakeProvider())


@pytest.fixture(scope="module")
def provider_with_logout() -> Iterator[FakeProvider]:
    yield from running(FakeProvider(logout=True))


@pytest.fixture(scope="module")
def console(database, provider: FakeProvider) -> Iterator[str]:
    settings = Settings(database_url=database.url, auth="smart", token_secret="oidc-test-" + uuid.uuid4().hex,
                        oidc_issuer=provider.issuer, oidc_client_id="fhirfus-console")
    with serving(settings, Store(database.engine)) as (root, _):
        yield root


@pytest.fixture(scope="module")
def provisioning_console(database, provider_with_logout: FakeProvider) -> Iterator[str]:
    """A console that opens an analyst account on a first provider login, whose provider ends sessions too."""
    settings = Settings(database_url=database.url, auth="smart", token_secret="oidc-test-" + uuid.uuid4().hex,
                        oidc_issuer=provider_with_logout.issuer, oidc_client_id="fhirfus-console",
                        oidc_auto_provision="analyst")
    with serving(settings, Store(database.engine)) as (root, _):
        yield root


def log_in_through(http: httpx.Client, provider: FakeProvider) -> httpx.Response:
    start = http.get("/app/login/oidc")
    assert start.status_code == 303 and start.headers["location"].startswith(provider.issuer), start.text
    query = parse_qs(urlparse(start.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["scope"] == ["openid email"]
    back = httpx.get(start.headers["location"])  # the provider, in the same browser
    assert back.status_code == 303
    return http.get(back.headers["location"])


def test_the_login_page_offers_the_identity_provider(console: str) -> None:
    assert "/app/login/oidc" in httpx.get(console + "/app/login").text


def test_a_person_with_an_account_logs_in_through_the_provider(console: str, provider: FakeProvider, database) -> None:
    provider.email = person(Store(database.engine), "site", f"S{uuid.uuid4().hex[:6]}").upper()  # emails ignore case
    with httpx.Client(base_url=console) as http:
        answer = log_in_through(http, provider)
        assert answer.status_code == 200 and 'url=/app/patients' in answer.text
        assert "samesite=strict" in answer.headers["set-cookie"].lower()
        assert http.get("/app/patients").status_code == 200


def test_the_provider_alone_opens_no_account(console: str, provider: FakeProvider, database) -> None:
    provider.email = f"stranger-{uuid.uuid4().hex[:6]}@hospital.example"
    with httpx.Client(base_url=console) as http:
        answer = log_in_through(http, provider)
        assert answer.status_code == 401 and "fhirfus_session" not in answer.headers.get("set-cookie", "")
        assert "an admin registers the email first" in answer.text
        assert http.get("/app/patients").status_code == 303
    assert provider.email not in {p.email for p in people.list_people(Store(database.engine))}


def test_an_email_an_admin_registered_logs_in_without_ever_choosing_a_password(
        console: str, provider: FakeProvider, database) -> None:
    store = Store(database.engine)
    with httpx.Client(base_url=console) as admin:
        assert admin.post("/app/login", data={"email": person(store, "admin"), "password": PASSWORD}).status_code == 303
        email = f"registered-{uuid.uuid4().hex[:6]}@hospital.example"
        token = csrf(admin.get("/app/admin/people"))
        assert admin.post("/app/admin/people", data={"csrf": token, "email": email, "role": "analyst"}).status_code == 200
    provider.email = email
    with httpx.Client(base_url=console) as http:
        answer = log_in_through(http, provider)
        assert answer.status_code == 200 and "url=/app/cohorts" in answer.text
        assert http.get("/app/cohorts").status_code == 200


def test_logging_out_ends_the_session_and_without_an_end_session_endpoint_stays_here(
        console: str, provider: FakeProvider, database) -> None:
    provider.email = person(Store(database.engine), "analyst")
    with httpx.Client(base_url=console) as http:
        log_in_through(http, provider)
        token, cookie = csrf(http.get("/app/cohorts")), http.cookies.get("fhirfus_session")
        out = http.post("/app/logout", data={"csrf": token})
        assert out.status_code == 303 and out.headers["location"] == "/app/login"
    assert httpx.get(console + "/app/cohorts", cookies={"fhirfus_session": cookie or ""}).status_code == 303


def test_a_setting_opens_a_non_admin_account_on_first_login_and_logout_ends_the_providers_session(
        provisioning_console: str, provider_with_logout: FakeProvider, database) -> None:
    store = Store(database.engine)
    provider_with_logout.email = f"New-{uuid.uuid4().hex[:6]}@hospital.example"
    with httpx.Client(base_url=provisioning_console) as http:
        answer = log_in_through(http, provider_with_logout)
        assert answer.status_code == 200 and "url=/app/cohorts" in answer.text
        [opened] = [p for p in people.list_people(store) if p.email == provider_with_logout.email.lower()]
        assert (opened.role, opened.site, opened.has_password) == ("analyst", None, False)
        assert http.get("/app/admin/people").status_code == 403
        token, cookie = csrf(http.get("/app/cohorts")), http.cookies.get("fhirfus_session")
        out = http.post("/app/logout", data={"csrf": token})
        assert out.status_code == 303 and out.headers["location"].startswith(f"{provider_with_logout.issuer}/logout?")
        back = httpx.get(out.headers["location"])  # the provider ends its session and sends the browser back
        assert back.status_code == 303 and back.headers["location"] == provisioning_console + "/app/login"
    assert provider_with_logout.logged_out[-1]["client_id"] == "fhirfus-console"
    assert httpx.get(provisioning_console + "/app/cohorts", cookies={"fhirfus_session": cookie or ""}).status_code == 303
    # a password login's logout stays here: the provider never opened that session
    with httpx.Client(base_url=provisioning_console) as http:
        assert http.post("/app/login", data={"email": person(store, "analyst"), "password": PASSWORD}).status_code == 303
        out = http.post("/app/logout", data={"csrf": csrf(http.get("/app/cohorts"))})
        assert out.headers["location"] == "/app/login"


def test_a_disabled_account_is_not_opened_again_by_the_setting(
        provisioning_console: str, provider_with_logout: FakeProvider, database) -> None:
    store = Store(database.engine)
    provider_with_logout.email = person(store, "analyst")
    people.set_enabled(store, provider_with_logout.email, False)
    with httpx.Client(base_url=provisioning_console) as http:
        assert log_in_through(http, provider_with_logout).status_code == 401
        assert http.get("/app/cohorts").status_code == 303


@pytest.mark.parametrize("value", ["admin", "site", "site:", "analyst:A", "everyone"])
def test_the_setting_never_opens_admin_accounts_and_a_wrong_value_stops_the_start(database, value: str) -> None:
    from fhirfus.api.app import create_app

    settings = Settings(database_url=database.url, auth="smart", token_secret="x" * 32, oidc_auto_provision=value)
    with pytest.raises(SystemExit, match="FHIRFUS_OIDC_AUTO_PROVISION must be 'analyst' or 'site:CODE'"):
        create_app(settings, Store(database.engine))


def test_an_answer_of_another_login_or_token_is_refused(console: str, provider: FakeProvider, database) -> None:
    provider.email = person(Store(database.engine), "analyst")
    with httpx.Client(base_url=console) as http:
        http.get("/app/login/oidc")
        assert http.get("/app/login/oidc/callback", params={"code": "x", "state": "forged"}).status_code == 401
    provider.nonce_override = "another login's nonce"
    try:
        with httpx.Client(base_url=console) as http:
            answer = log_in_through(http, provider)
            assert answer.status_code == 401 and "nonce" in answer.text
    finally:
        provider.nonce_override = None
