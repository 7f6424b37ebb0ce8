"""SMART backend-services clients for tests: real keys, real signed assertions (PyJWT)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhirfus.auth.clients import register
from fhirfus.store.repository import Store

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class TestClient:
    client_id: str
    key: object
    algorithm: str
    kid: str
    token_url: str
    scope: str
    extra_headers: dict = field(default_factory=dict)

    def assertion(self, **overrides: object) -> str:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url, "exp": now + 240,
                  "jti": str(uuid.uuid4())}
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers={"kid": self.kid})

    def token_request(self, assertion: str | None = None, scope: str | None = None) -> httpx.Response:
        return httpx.post(self.token_url, data={
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or self.assertion(), "scope": scope or self.scope,
        }, timeout=30)

    def http(self, base: str) -> httpx.Client:
        response = self.token_request()
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _jwk(key: object, kid: str, algorithm: str) -> dict:
    public = key.public_key()  # type: ignore[attr-defined]
    data = json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(public))
    return {**data, "kid": kid, "alg": algorithm, "use": "sig"}


def make_client(store: Store, token_url: str, *, role: str, scope: str, site: str | None = None,
                algorithm: str = "RS384") -> TestClient:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048) if algorithm == "RS384" \
        else ec.generate_private_key(ec.SECP384R1())
    kid = uuid.uuid4().hex[:8]
    client = register(store, f"test {role} {site or ''}", role, scope, {"keys": [_jwk(key, kid, algorithm)]}, site)
    return TestClient(client.client_id, key, algorithm, kid, token_url, scope)
