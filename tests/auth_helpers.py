"""SMART backend-services clients for tests: real keys, real signed assertions (PyJWT)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhirfus.auth.clients import register
from fhirfus.store.repository import Store

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: A claim value meaning "leave this claim out".
DROP = object()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(header: dict, claims: object, key: object, algorithm: str) -> str:
    """A compact JWS of any header and payload, signed with ``algorithm`` (no checks on either)."""
    signing_input = f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(claims))}"
    signature = b"" if algorithm == "none" else \
        jwt.algorithms.get_default_algorithms()[algorithm].sign(signing_input.encode(), key)
    return f"{signing_input}.{b64url(signature)}"


def new_key(algorithm: str = "RS384") -> object:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048) if algorithm.startswith("RS") \
        else ec.generate_private_key(ec.SECP384R1())


def public_jwk(key: object, kid: str | None, algorithm: str) -> dict:
    public = key.public_key()  # type: ignore[attr-defined]
    data = json.loads(jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(public))
    return {**data, "alg": algorithm, "use": "sig", **({"kid": kid} if kid is not None else {})}


@dataclass
class TestClient:
    __test__ = False  # a helper, not a test class

    client_id: str
    key: object
    algorithm: str
    kid: str | None
    token_url: str
    scope: str
    extra_headers: dict = field(default_factory=dict)

    def claims(self, **overrides: object) -> dict:
        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url, "exp": now + 240,
                  "jti": str(uuid.uuid4())}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not DROP}

    def assertion(self, **overrides: object) -> str:
        header = {"kid": self.kid} if self.kid is not None else {}
        return jwt.encode(self.claims(**overrides), self.key, algorithm=self.algorithm, headers=header)

    def signed(self, claims: object = None, **header: object) -> str:
        """An assertion signed with this client's key; ``header`` overrides (DROP removes) typ/alg/kid."""
        full = {"typ": "JWT", "alg": self.algorithm, **({"kid": self.kid} if self.kid else {}), **header}
        return jws({k: v for k, v in full.items() if v is not DROP}, self.claims() if claims is None else claims,
                   self.key, self.algorithm)

    def form(self, assertion: str | None = None, **overrides: object) -> dict:
        form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion or self.assertion(), "scope": self.scope, **overrides}
        return {k: v for k, v in form.items() if v is not DROP}

    def token_request(self, assertion: str | None = None, scope: str | None = None) -> httpx.Response:
        return httpx.post(self.token_url, data=self.form(assertion, scope=scope or self.scope), timeout=30)

    def token(self) -> str:
        response = self.token_request()
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def http(self, base: str) -> httpx.Client:
        return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {self.token()}"}, timeout=30)


def make_client(store: Store, token_url: str, *, role: str, scope: str, site: str | None = None,
                algorithm: str = "RS384") -> TestClient:
    key = new_key(algorithm)
    kid = uuid.uuid4().hex[:8]
    client = register(store, f"test {role} {site or ''}", role, scope, {"keys": [public_jwk(key, kid, algorithm)]}, site)
    return TestClient(client.client_id, key, algorithm, kid, token_url, scope)


@dataclass
class SiteIds:
    """What a request can name, all of one ``kind``: ``own`` (site A's), ``other`` (site B's) or
    ``unknown`` (never used); the targets of the access matrix and of the bad-input route fuzz."""

    kind: str
    patient: str
    deleted: str
    group: str
    response: str
    export_job: str
    export_file: str
    import_job: str
    import_file: str
    analysis_job: str
    analysis_file: str
    identifier: str
    codesystem: str
    valueset: str
    conceptmap: str
    codesystem_url: str
    #: A file previewed in the web console (only the route fuzz makes one; else an id never used).
    upload: str = field(default_factory=lambda: uuid.uuid4().hex)


def two_sites_and_roles(store: Store, token_url: str, site_a: str, site_b: str) -> dict[str, TestClient]:
    """A client of each kind the access rules tell apart: a site client of each of two sites, an
    admin and an analyst (the cast of the matrix and of the bad-input fuzz)."""
    return {
        "a": make_client(store, token_url, role="site", site=site_a, scope="system/*.cruds"),
        "b": make_client(store, token_url, role="site", site=site_b, scope="system/*.cruds"),
        "admin": make_client(store, token_url, role="admin", scope="system/*.cruds"),
        "analyst": make_client(store, token_url, role="analyst", scope="system/*.rs"),
    }
