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
from test_console import person

from fhirfus.settings import Settings
from fhirfus.store.repository import Store
from fhirfus.testing import free_port


class FakeProvider:
    """Authorizes at once as ``self.email``; the ID token carries the nonce it was given, unless told otherwise."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.email = ""
        self.nonce_override: str | None = None
        self.codes: dict[str, dict[str, str]] = {}
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.app = Starlette(routes=[
            Route("/.well-known/openid-configuration", self.configuration), Route("/authorize", self.authorize),
            Route("/token", self.token, methods=["POST"]), Route("/jwks", self.jwks)])

    async def configuration(self, request: Request) -> JSONResponse:
        return JSONResponse({"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
                             "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks"})

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


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    server = uvicorn.Server(uvicorn.Config(fake.app, host="127.0.0.1", port=fake.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield fake
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def console(database, provider: FakeProvider) -> Iterator[str]:
    settings = Settings(database_url=database.url, auth="smart", token_secret="oidc-test-" + uuid.uuid4().hex,
                        oidc_issuer=provider.issuer, oidc_client_id="fhirfus-console")
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


def test_the_provider_alone_opens_no_account(console: str, provider: FakeProvider) -> None:
    provider.email = f"stranger-{uuid.uuid4().hex[:6]}@hospital.example"
    with httpx.Client(base_url=console) as http:
        answer = log_in_through(http, provider)
        assert answer.status_code == 401 and "fhirfus_session" not in answer.headers.get("set-cookie", "")
        assert http.get("/app/patients").status_code == 303


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
